-- The change feed (src/changes.ts): every conversion row and every move in its history carries the
-- key the feed orders by, the id of the transaction that wrote it. Rows already stored get this
-- migration's transaction id: the feed starts with them, inserts before moves.

-- AlterTable
ALTER TABLE "conversions" ADD COLUMN     "change_key" xid8,
ADD COLUMN     "stored_key" xid8 NOT NULL DEFAULT pg_current_xact_id();

-- AlterTable (sheet_id filled from the conversions before it becomes required)
ALTER TABLE "conversion_history" ADD COLUMN     "change_key" xid8,
ADD COLUMN     "sheet_id" TEXT;

-- One pass: the sheet, and on every entry but a history's first (the conversion's first state; the
-- others are moves) this migration's transaction id.
UPDATE "conversion_history" h SET "sheet_id" = c."sheet_id",
  "change_key" = CASE WHEN h."id" <> (SELECT min(f."id") FROM "conversion_history" f WHERE f."conversion_id" = h."conversion_id") THEN pg_current_xact_id() END
FROM "conversions" c WHERE c."id" = h."conversion_id";

ALTER TABLE "conversion_history" ALTER COLUMN "sheet_id" SET NOT NULL;

-- CreateIndex
CREATE INDEX "conversions_stored_key_id_idx" ON "conversions"("stored_key", "id");

-- CreateIndex
CREATE INDEX "conversion_history_change_key_id_idx" ON "conversion_history"("change_key", "id");

-- Not in schema.prisma (Prisma has no triggers): whichever statement moves a conversion (the receiver's
-- batch, an import), the move gets its feed key before the row is written, and the history trigger
-- of the lifecycle migration now also writes the sheet and that key. The key is the transaction id,
-- or the key of the conversion's previous change when that is larger: src/changes.ts says why.
CREATE FUNCTION "conversions_change_key"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW."change_key" := greatest(pg_current_xact_id(), COALESCE(OLD."change_key", OLD."stored_key"));
  RETURN NEW;
END
$$;

CREATE TRIGGER "conversions_change_key" BEFORE UPDATE OF "status" ON "conversions"
FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status") EXECUTE FUNCTION "conversions_change_key"();

CREATE OR REPLACE FUNCTION "conversions_record_move"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD."updated_at" IS NULL THEN
    INSERT INTO "conversion_history" ("conversion_id", "sheet_id", "status", "network_status", "payout", "currency", "recorded_at")
    VALUES (OLD."id", OLD."sheet_id", OLD."status", OLD."network_status", OLD."payout", OLD."currency", OLD."received_at");
  END IF;
  INSERT INTO "conversion_history" ("conversion_id", "sheet_id", "change_key", "status", "network_status", "payout", "currency", "recorded_at")
  VALUES (NEW."id", NEW."sheet_id", NEW."change_key", NEW."status", NEW."network_status", NEW."payout", NEW."currency", COALESCE(NEW."updated_at", now()));
  RETURN NULL;
END
$$;
