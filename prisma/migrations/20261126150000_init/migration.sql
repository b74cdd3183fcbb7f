
-- CreateSchema
CREATE SCHEMA IF NOT EXISTS "public";

-- CreateTable
CREATE TABLE "sheets" (
    "sheet_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "default_currency" CHAR(3) NOT NULL,
    "active" BOOLEAN NOT NULL DEFAULT true,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "sheets_pkey" PRIMARY KEY ("sheet_id")
);

-- CreateTable
CREATE TABLE "conversions" (
    "id" BIGSERIAL NOT NULL,
    "sheet_id" TEXT NOT NULL,
    "transaction_id" TEXT NOT NULL,
    "payout" DECIMAL,
    "currency" CHAR(3) NOT NULL,
    "campaign_id" TEXT,
    "adset_id" TEXT,
    "ad_id" TEXT,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "conversions_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "delivery_rejections" (
    "id" BIGSERIAL NOT NULL,
    "sheet_id" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "parameter" TEXT,
    "raw_query" TEXT NOT NULL,
    "remote_address" TEXT,
    "received_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "delivery_rejections_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "conversions_sheet_id_received_at_id_idx" ON "conversions"("sheet_id", "received_at" DESC, "id" DESC);

-- CreateIndex
CREATE UNIQUE INDEX "conversions_sheet_id_transaction_id_key" ON "conversions"("sheet_id", "transaction_id");

-- CreateIndex
CREATE INDEX "delivery_rejections_sheet_id_id_idx" ON "delivery_rejections"("sheet_id", "id" DESC);

-- AddForeignKey
ALTER TABLE "conversions" ADD CONSTRAINT "conversions_sheet_id_fkey" FOREIGN KEY ("sheet_id") REFERENCES "sheets"("sheet_id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "delivery_rejections" ADD CONSTRAINT "delivery_rejections_sheet_id_fkey" FOREIGN KEY ("sheet_id") REFERENCES "sheets"("sheet_id") ON DELETE CASCADE ON UPDATE CASCADE;

