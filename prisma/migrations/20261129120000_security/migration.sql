-- Postback security: sheet secrets (stored hashed, with the previous one during a rotation's grace
-- period), address allow-lists, the last test postback of a sheet, test rejections, API key roles.

-- AlterTable
ALTER TABLE "sheets" ADD COLUMN     "allowed_addresses" TEXT[] DEFAULT ARRAY[]::TEXT[],
ADD COLUMN     "last_test_at" TIMESTAMPTZ(3),
ADD COLUMN     "last_test_outcome" TEXT,
ADD COLUMN     "previous_token_expires_at" TIMESTAMPTZ(3),
ADD COLUMN     "previous_token_hash" CHAR(64),
ADD COLUMN     "token_hash" CHAR(64);

-- AlterTable
ALTER TABLE "delivery_rejections" ADD COLUMN     "test" BOOLEAN NOT NULL DEFAULT false;

-- AlterTable
ALTER TABLE "api_keys" ADD COLUMN     "role" TEXT NOT NULL DEFAULT 'read';

-- What a key could do before roles: global keys used the admin routes, scoped keys only read.
UPDATE "api_keys" SET "role" = 'admin' WHERE "global";

ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_role_check" CHECK ("role" IN ('read', 'admin'));
