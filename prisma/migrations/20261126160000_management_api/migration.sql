
-- CreateTable
CREATE TABLE "delivery_counters" (
    "sheet_id" TEXT NOT NULL,
    "hour" TIMESTAMPTZ(0) NOT NULL,
    "outcome" TEXT NOT NULL,
    "reason" TEXT NOT NULL DEFAULT '',
    "count" INTEGER NOT NULL,

    CONSTRAINT "delivery_counters_pkey" PRIMARY KEY ("sheet_id","hour","outcome","reason")
);

-- CreateTable
CREATE TABLE "api_keys" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "key_hash" CHAR(64) NOT NULL,
    "global" BOOLEAN NOT NULL DEFAULT false,
    "sheet_ids" TEXT[],
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMPTZ(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "api_keys_key_hash_key" ON "api_keys"("key_hash");

-- AddForeignKey
ALTER TABLE "delivery_counters" ADD CONSTRAINT "delivery_counters_sheet_id_fkey" FOREIGN KEY ("sheet_id") REFERENCES "sheets"("sheet_id") ON DELETE CASCADE ON UPDATE CASCADE;

