-- Indexes over the UTC day rollups (level 1440, phase 0) that a filtered list page walks
-- (src/conversions.ts, `guided`): a sheet's next day that holds a campaign, ad set, ad, event,
-- currency or status is one probe, however many days without it lie between. Not declared in
-- schema.prisma (partial indexes are a preview feature of Prisma's schema language; the project's
-- migrations are SQL). They hold the day rows only, about one in a hundred of the rollups; a fold
-- does about 12 % more work with them (BENCHMARKS.md). Built in the migration's transaction, not
-- CONCURRENTLY: the build holds off folds (not the receiver, which never writes the rollups).
CREATE INDEX "conversion_rollups_day_campaign_idx" ON "conversion_rollups"("sheet_id", "campaign_id", "bucket") WHERE "level" = 1440 AND "phase" = 0;
CREATE INDEX "conversion_rollups_day_adset_idx" ON "conversion_rollups"("sheet_id", "adset_id", "bucket") WHERE "level" = 1440 AND "phase" = 0;
CREATE INDEX "conversion_rollups_day_ad_idx" ON "conversion_rollups"("sheet_id", "ad_id", "bucket") WHERE "level" = 1440 AND "phase" = 0;
CREATE INDEX "conversion_rollups_day_event_idx" ON "conversion_rollups"("sheet_id", "event", "bucket") WHERE "level" = 1440 AND "phase" = 0;
CREATE INDEX "conversion_rollups_day_currency_idx" ON "conversion_rollups"("sheet_id", "currency", "bucket") WHERE "level" = 1440 AND "phase" = 0;
CREATE INDEX "conversion_rollups_day_approved_idx" ON "conversion_rollups"("sheet_id", "bucket") WHERE "level" = 1440 AND "phase" = 0 AND "approved" > 0;
CREATE INDEX "conversion_rollups_day_pending_idx" ON "conversion_rollups"("sheet_id", "bucket") WHERE "level" = 1440 AND "phase" = 0 AND "pending" > 0;
CREATE INDEX "conversion_rollups_day_rejected_idx" ON "conversion_rollups"("sheet_id", "bucket") WHERE "level" = 1440 AND "phase" = 0 AND "rejected" > 0;
