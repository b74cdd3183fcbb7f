-- Pre-aggregates of the summary (src/rollups.ts): per sheet, campaign, ad set, ad, event, currency
-- and time bucket, the count and the sum of payouts of each status, at four widths of UTC-aligned
-- bucket (15 minutes, 1 hour, 6 hours, 1 day; `level` is the width in minutes), and days that start
-- at `phase` minutes past UTC midnight (a zone's local day: 330 for Asia/Kolkata) for the phases in
-- `rollup_phases`. They hold every change whose change-feed key is below `rollup_state.watermark`,
-- folded in the background; a summary adds the changes at or above it from the rows, so it is exact
-- at every moment. Missing ids are '' here.

-- CreateTable
CREATE TABLE "conversion_rollups" (
    "sheet_id" TEXT NOT NULL,
    "level" SMALLINT NOT NULL,
    "phase" SMALLINT NOT NULL DEFAULT 0,
    "bucket" TIMESTAMPTZ(3) NOT NULL,
    "campaign_id" TEXT NOT NULL,
    "adset_id" TEXT NOT NULL,
    "ad_id" TEXT NOT NULL,
    "event" TEXT NOT NULL,
    "currency" CHAR(3) NOT NULL,
    "approved" BIGINT NOT NULL,
    "approved_revenue" DECIMAL NOT NULL,
    "pending" BIGINT NOT NULL,
    "pending_revenue" DECIMAL NOT NULL,
    "rejected" BIGINT NOT NULL,
    "rejected_revenue" DECIMAL NOT NULL,

    CONSTRAINT "conversion_rollups_pkey" PRIMARY KEY ("sheet_id","level","phase","bucket","campaign_id","adset_id","ad_id","event","currency")
);

-- CreateTable
CREATE TABLE "rollup_phases" (
    "phase" SMALLINT NOT NULL,
    "ready" BOOLEAN NOT NULL DEFAULT false,

    CONSTRAINT "rollup_phases_pkey" PRIMARY KEY ("phase")
);

-- CreateTable
CREATE TABLE "rollup_state" (
    "id" BOOLEAN NOT NULL DEFAULT true,
    "watermark" xid8 NOT NULL,

    CONSTRAINT "rollup_state_pkey" PRIMARY KEY ("id")
);

-- Nothing folded yet: the first fold starts from the first change. UTC days are phase 0.
INSERT INTO "rollup_state" ("id", "watermark") VALUES (true, '0');
INSERT INTO "rollup_phases" ("phase", "ready") VALUES (0, true);

-- Not in schema.prisma (Prisma has no functions). The first instant of a local day in a zone: local
-- midnight, or, where a clock went back over midnight (the hour after it happened twice), its first
-- occurrence, which PostgreSQL does not pick.
CREATE FUNCTION "rollup_day_start"(d date, tz text) RETURNS timestamptz LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT min(c) FROM (SELECT (d::timestamp AT TIME ZONE tz) - s * interval '30 minutes' AS c FROM generate_series(0, 2) s) x
  WHERE (c AT TIME ZONE tz)::date = d
$$;

-- The buckets that tile [s, e): the widest whole buckets in the middle, narrower ones towards the
-- ends, and (level 0) what is left at the ends off a 15-minute edge, which a summary reads from rows.
CREATE FUNCTION "rollup_pieces"(s timestamptz, e timestamptz) RETURNS TABLE ("level" smallint, "lo" timestamptz, "hi" timestamptz)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE ROWS 8 AS $$
DECLARE
  origin CONSTANT timestamptz := '2001-01-01 00:00:00+00';
  width smallint;
  a timestamptz;
  b timestamptz;
  covered_lo timestamptz;
  covered_hi timestamptz;
BEGIN
  IF s >= e THEN RETURN; END IF;
  a := date_bin('15 minutes', s - interval '1 microsecond', origin) + interval '15 minutes';
  b := date_bin('15 minutes', e, origin);
  IF a >= b THEN
    level := 0; lo := s; hi := e; RETURN NEXT; RETURN;
  END IF;
  IF s < a THEN level := 0; lo := s; hi := a; RETURN NEXT; END IF;
  IF b < e THEN level := 0; lo := b; hi := e; RETURN NEXT; END IF;
  FOREACH width IN ARRAY ARRAY[1440, 360, 60, 15]::smallint[] LOOP
    a := date_bin(make_interval(mins => width), s - interval '1 microsecond', origin) + make_interval(mins => width);
    b := date_bin(make_interval(mins => width), e, origin);
    CONTINUE WHEN a >= b;
    level := width;
    IF covered_lo IS NULL THEN
      lo := a; hi := b; RETURN NEXT;
    ELSE
      IF a < covered_lo THEN lo := a; hi := covered_lo; RETURN NEXT; END IF;
      IF covered_hi < b THEN lo := covered_hi; hi := b; RETURN NEXT; END IF;
    END IF;
    covered_lo := a;
    covered_hi := b;
  END LOOP;
END
$$;
