-- Conversion lifecycle: status, event (part of the idempotency key) and the history of moves.
-- Existing rows become approved base conversions (event '').

-- AlterTable
ALTER TABLE "conversions" ADD COLUMN     "event" TEXT NOT NULL DEFAULT '',
ADD COLUMN     "network_status" TEXT,
ADD COLUMN     "status" TEXT NOT NULL DEFAULT 'approved',
ADD COLUMN     "updated_at" TIMESTAMPTZ(3);

-- Not in schema.prisma (Prisma has no check constraints): the statuses of src/lifecycle.ts.
ALTER TABLE "conversions" ADD CONSTRAINT "conversions_status_check" CHECK ("status" IN ('approved', 'pending', 'rejected'));

-- CreateIndex (the new key before the old one goes, so that the table is never without one)
CREATE UNIQUE INDEX "conversions_sheet_id_transaction_id_event_key" ON "conversions"("sheet_id", "transaction_id", "event");

-- DropIndex
DROP INDEX "conversions_sheet_id_transaction_id_key";

-- CreateTable
CREATE TABLE "conversion_history" (
    "id" BIGSERIAL NOT NULL,
    "conversion_id" BIGINT NOT NULL,
    "status" TEXT NOT NULL,
    "network_status" TEXT,
    "payout" DECIMAL,
    "currency" CHAR(3) NOT NULL,
    "recorded_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "conversion_history_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "conversion_history_conversion_id_id_idx" ON "conversion_history"("conversion_id", "id");

-- AddForeignKey
ALTER TABLE "conversion_history" ADD CONSTRAINT "conversion_history_conversion_id_fkey" FOREIGN KEY ("conversion_id") REFERENCES "conversions"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Not in schema.prisma (Prisma has no triggers): every status move of a conversion is appended to
-- its history, whichever statement makes it (the receiver's batch, an import). A conversion's first
-- state is written only at its first move, from the row as it was: a conversion that is never
-- updated (the common case) costs the receiver one row, and its history is the row itself.
CREATE FUNCTION "conversions_record_move"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD."updated_at" IS NULL THEN
    INSERT INTO "conversion_history" ("conversion_id", "status", "network_status", "payout", "currency", "recorded_at")
    VALUES (OLD."id", OLD."status", OLD."network_status", OLD."payout", OLD."currency", OLD."received_at");
  END IF;
  INSERT INTO "conversion_history" ("conversion_id", "status", "network_status", "payout", "currency", "recorded_at")
  VALUES (NEW."id", NEW."status", NEW."network_status", NEW."payout", NEW."currency", COALESCE(NEW."updated_at", now()));
  RETURN NULL;
END
$$;

CREATE TRIGGER "conversions_history" AFTER UPDATE OF "status" ON "conversions"
FOR EACH ROW WHEN (OLD."status" IS DISTINCT FROM NEW."status") EXECUTE FUNCTION "conversions_record_move"();
