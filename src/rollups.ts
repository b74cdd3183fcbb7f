// The summary's pre-aggregates: how they are kept and how a summary reads them.
//
// `conversion_rollups` holds, per sheet, campaign, ad set, ad, event, currency, status and UTC bucket
// of 15 minutes, 1 hour, 6 hours and 1 day, the count and the payout sum of every change whose
// change-feed key (src/changes.ts) is below `rollup_state.watermark`. The receiver never writes them:
// a fold, run in the background by one instance at a time, adds the changes between the watermark
// and the feed's horizon and moves the watermark, in one transaction. Below the horizon the set of
// changes is final (no running or later transaction can write a key there), so what is folded is
// never changed again behind the watermark.
//
// A summary is one statement, so one snapshot: the rollups as of the watermark, plus the changes at
// or above it read from the rows (a conversion stored since: its state now; one stored before and
// moved since: its state now, minus its state at the watermark, from its history). So the answer
// is exact at every moment, however far the fold is behind; the fold only decides how many rows the
// summary reads. Why not update aggregates in the receiver's own statement: concurrent batches of a
// busy sheet would queue on the same few aggregate rows (same campaign, same quarter hour), and the
// receiver's statement would write a second table; this costs the receiver nothing.
//
// A time range is tiled by the widest whole buckets (SQL function rollup_pieces): a day in any zone
// starts on a quarter hour (today's offsets are all multiples of 15 minutes), so `interval=day` is
// exact in every zone; what is left off a 15-minute edge (a `from` at 12:07, a historical offset)
// is read from the rows. A filter the rollups do not hold (`transaction_id`) reads the rows.
import type { SheetScope } from './conversions.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { STATUSES } from './lifecycle.ts'
import type { SummaryQuery, SummaryRow } from './schemas/management.ts'

/** Changes folded per statement at most (more when many share the last key). */
export const FOLD_CHUNK = 100_000

// Held for the fold's transaction: one instance folds at a time.
const FOLD_LOCK = 7_105_321_001n

// One fold step. The range is [watermark, u): u is the horizon, or lower when more than $1 changes
// wait (the first key past the $1-th, so that a step always makes progress). A conversion stored in
// the range counts with its first state (the first history entry when it has moved since, else the
// row); a move in the range counts its new state and takes back the state before it.
const FOLD_SQL = `
WITH st AS MATERIALIZED (
  SELECT watermark AS w, pg_snapshot_xmin(pg_current_snapshot()) AS h FROM rollup_state
), bound AS MATERIALIZED (
  SELECT st.w, least(st.h,
    COALESCE((SELECT min(c.stored_key) FROM conversions c WHERE c.stored_key > (
      SELECT k.stored_key FROM conversions k WHERE k.stored_key >= st.w ORDER BY k.stored_key OFFSET $1 LIMIT 1)), st.h),
    COALESCE((SELECT min(m.change_key) FROM conversion_history m WHERE m.change_key > (
      SELECT k.change_key FROM conversion_history k WHERE k.change_key >= st.w ORDER BY k.change_key OFFSET $1 LIMIT 1)), st.h)
  ) AS u
  FROM st
), changes AS MATERIALIZED (
  SELECT c.sheet_id, c.campaign_id, c.adset_id, c.ad_id, c.event, c.received_at,
    COALESCE(f.status, c.status) AS status, CASE WHEN f.status IS NULL THEN c.payout ELSE f.payout END AS payout,
    COALESCE(f.currency, c.currency) AS currency, 1 AS n
  FROM conversions c
  LEFT JOIN LATERAL (
    SELECT f.status, f.payout, f.currency FROM conversion_history f
    WHERE c.updated_at IS NOT NULL AND f.conversion_id = c.id ORDER BY f.id LIMIT 1
  ) f ON true
  WHERE c.stored_key >= (SELECT w FROM bound) AND c.stored_key < (SELECT u FROM bound)
  UNION ALL
  SELECT c.sheet_id, c.campaign_id, c.adset_id, c.ad_id, c.event, c.received_at, s.status, s.payout, s.currency, s.n
  FROM conversion_history m
  JOIN conversions c ON c.id = m.conversion_id
  CROSS JOIN LATERAL (
    SELECT m.status, m.payout, m.currency, 1 AS n
    UNION ALL
    (SELECT p.status, p.payout, p.currency, -1 FROM conversion_history p
     WHERE p.conversion_id = m.conversion_id AND p.id < m.id ORDER BY p.id DESC LIMIT 1)
  ) s
  WHERE m.change_key >= (SELECT w FROM bound) AND m.change_key < (SELECT u FROM bound)
), delta AS (
  SELECT sheet_id, date_bin('15 minutes', received_at, '2001-01-01 00:00:00+00') AS quarter,
    COALESCE(campaign_id, '') AS campaign_id, COALESCE(adset_id, '') AS adset_id, COALESCE(ad_id, '') AS ad_id,
    event, currency, status, sum(n) AS conversions, COALESCE(sum(n * payout), 0) AS revenue
  FROM changes
  GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
), folded AS (
  INSERT INTO conversion_rollups AS r (sheet_id, level, bucket, campaign_id, adset_id, ad_id, event, currency, status, conversions, revenue)
  SELECT d.sheet_id, l.level, date_bin(make_interval(mins => l.level), d.quarter, '2001-01-01 00:00:00+00'),
    d.campaign_id, d.adset_id, d.ad_id, d.event, d.currency, d.status, sum(d.conversions), sum(d.revenue)
  FROM delta d CROSS JOIN (VALUES (15::smallint), (60::smallint), (360::smallint), (1440::smallint)) AS l(level)
  GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
  HAVING sum(d.conversions) <> 0 OR sum(d.revenue) <> 0
  ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
  ON CONFLICT (sheet_id, level, bucket, campaign_id, adset_id, ad_id, event, currency, status) DO UPDATE SET
    conversions = r.conversions + excluded.conversions,
    revenue = r.revenue + excluded.revenue
  RETURNING 1
), advanced AS (
  UPDATE rollup_state SET watermark = bound.u FROM bound WHERE bound.u > bound.w RETURNING 1
)
SELECT (SELECT count(*) FROM changes)::int AS changes, (SELECT u < (SELECT h FROM st) FROM bound) AS more`

export interface FoldResult {
  /** Changes folded (an insert counts one, a move two: its new state and the old one taken back). */
  changes: number
  /** Whether changes below the horizon are still waiting (the step was bounded). */
  more: boolean
  /** Whether another instance was folding, so this one did nothing. */
  busy: boolean
}

// Whether any change below the horizon waits: a cheap read, so that an idle instance's folds cost
// next to nothing (a fold is a transaction of a large statement).
const WAITING_SQL = `
SELECT EXISTS (SELECT FROM conversions c WHERE c.stored_key >= s.watermark AND c.stored_key < s.h)
    OR EXISTS (SELECT FROM conversion_history m WHERE m.change_key >= s.watermark AND m.change_key < s.h) AS waiting
FROM (SELECT watermark, pg_snapshot_xmin(pg_current_snapshot()) AS h FROM rollup_state) s`

/** Folds up to about `chunk` waiting changes into the rollups, in one transaction. */
export async function foldRollups(prisma: PrismaClient, chunk = FOLD_CHUNK): Promise<FoldResult> {
  const [state] = await prisma.$queryRawUnsafe<Array<{ waiting: boolean }>>(WAITING_SQL)
  if (!state?.waiting) return { changes: 0, more: false, busy: false }
  return prisma.$transaction(
    async (tx) => {
      const [lock] = await tx.$queryRaw<Array<{ locked: boolean }>>`SELECT pg_try_advisory_xact_lock(${FOLD_LOCK}) AS locked`
      if (!lock?.locked) return { changes: 0, more: false, busy: true }
      const [row] = await tx.$queryRawUnsafe<Array<{ changes: number; more: boolean }>>(FOLD_SQL, chunk)
      return { changes: row?.changes ?? 0, more: row?.more ?? false, busy: false }
    },
    // A first fold after an upgrade or a large import may take a while; it runs in the background.
    { maxWait: 10_000, timeout: 600_000 },
  )
}

/** Folds until nothing below the horizon waits; returns the changes folded. */
export async function foldAll(prisma: PrismaClient): Promise<number> {
  let total = 0
  for (;;) {
    const result = await foldRollups(prisma)
    total += result.changes
    if (!result.more && !result.busy) return total
    if (result.busy) await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * A revenue as the API writes it: exact, at least two fraction digits, no trailing zeros past them
 * ("12.50", "0.00", "0.125"), so that an amount reads the same whichever rows or rollups it came from.
 */
export const revenueText = (sql: string) => `(CASE WHEN min_scale(${sql}) <= 2 THEN round(${sql}, 2) ELSE trim_scale(${sql}) END)::text`

/** The summary's status columns from rows of (status, n, revenue): `conversions` and `revenue` are the approved ones. */
export function statusColumns(status: string, count: string, revenue: string): string {
  return STATUSES.map((s) => {
    const prefix = s === 'approved' ? '' : `${s}_`
    const sum = `COALESCE(sum(${revenue}) FILTER (WHERE ${status} = '${s}'), 0)`
    return `COALESCE(sum(${count}) FILTER (WHERE ${status} = '${s}'), 0)::int AS ${prefix}conversions, ${revenueText(sum)} AS ${prefix}revenue`
  }).join(', ')
}

const GROUP_COLUMNS = {
  campaign: ['campaign_id'],
  adset: ['campaign_id', 'adset_id'],
  ad: ['campaign_id', 'adset_id', 'ad_id'],
  event: ['event'],
} as const

type DimensionFilter = 'campaign_id' | 'adset_id' | 'ad_id' | 'event' | 'currency' | 'status'

/** Filters that the rollups hold, as conditions on a row (or rollup) alias; `state` gives status and currency. */
function dimensionConditions(query: SummaryQuery, alias: string, state = alias): Prisma.Sql[] {
  const where: Prisma.Sql[] = []
  const values: Partial<Record<DimensionFilter, string>> = {
    campaign_id: query.campaign_id,
    adset_id: query.adset_id,
    ad_id: query.ad_id,
    event: query.event,
    currency: query.currency?.toUpperCase(),
    status: query.status,
  }
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) continue
    const owner = name === 'status' || name === 'currency' ? state : alias
    where.push(Prisma.sql`${Prisma.raw(`${owner}.${name}`)} = ${value}`)
  }
  return where
}

function scopeConditions(scope: SheetScope, query: SummaryQuery, alias: string): Prisma.Sql[] {
  const where: Prisma.Sql[] = []
  if (query.sheet_id !== undefined) where.push(Prisma.sql`${Prisma.raw(alias)}.sheet_id = ${query.sheet_id}`)
  if (scope !== null) where.push(Prisma.sql`${Prisma.raw(alias)}.sheet_id = ANY(${[...scope]}::text[])`)
  return where
}

const and = (where: Prisma.Sql[]) => (where.length ? Prisma.join(where, ' AND ') : Prisma.sql`true`)

/**
 * The summary from the rollups plus the rows changed since they were folded (see the top of this
 * file). `from` and `to` are already parsed; `tz` is a zone the database knows.
 */
export async function summarizeFromRollups(
  prisma: PrismaClient,
  scope: SheetScope,
  query: SummaryQuery,
  range: { from?: Date; to?: Date },
  tz: string,
): Promise<SummaryRow[]> {
  const from = range.from ?? '-infinity'
  const to = range.to ?? 'infinity'
  const byDay = query.interval === 'day'
  const label = (column: string) => (byDay ? Prisma.sql`to_char(${Prisma.raw(column)} AT TIME ZONE ${tz}, 'YYYY-MM-DD')` : Prisma.sql`''`)
  const rowDims = (alias: string) =>
    Prisma.raw(`COALESCE(${alias}.campaign_id, '') AS campaign_id, COALESCE(${alias}.adset_id, '') AS adset_id, COALESCE(${alias}.ad_id, '') AS ad_id, ${alias}.event`)
  const inRange = (alias: string) => Prisma.sql`${Prisma.raw(alias)}.received_at >= ${from}::timestamptz AND ${Prisma.raw(alias)}.received_at < ${to}::timestamptz`
  const rowScope = (alias: string, state = alias) => and([...scopeConditions(scope, query, alias), ...dimensionConditions(query, alias, state)])
  // The days of the span (or the span itself), and the buckets and row ranges that tile each.
  const segments = byDay
    ? Prisma.sql`
      SELECT label, greatest(s, lo) AS s, least(COALESCE(lead(s) OVER (ORDER BY s), hi), hi) AS e
      FROM (
        SELECT to_char(d, 'YYYY-MM-DD') AS label, rollup_day_start(d::date, ${tz}) AS s, span.lo, span.hi
        FROM span, generate_series((span.lo AT TIME ZONE ${tz})::date, ((span.hi - interval '1 microsecond') AT TIME ZONE ${tz})::date, interval '1 day') AS d
        WHERE span.first IS NOT NULL AND span.lo < span.hi
      ) days
      WHERE s IS NOT NULL`
    : Prisma.sql`SELECT '' AS label, lo AS s, hi AS e FROM span WHERE first IS NOT NULL AND lo < hi`
  const groupKeys = ['label', ...GROUP_COLUMNS[query.group_by], 'currency']
  const output = [
    ...(byDay ? ['label AS day'] : []),
    ...GROUP_COLUMNS[query.group_by].map((column) => `NULLIF(${column}, '') AS ${column}`),
    'currency',
  ]
  const rows = await prisma.$queryRaw<SummaryRow[]>(Prisma.sql`
    WITH st AS MATERIALIZED (SELECT watermark AS w FROM rollup_state),
    span AS MATERIALIZED (
      SELECT greatest(min(r.bucket), ${from}::timestamptz) AS lo, least(max(r.bucket) + interval '1 day', ${to}::timestamptz) AS hi, min(r.bucket) AS first
      FROM conversion_rollups r WHERE r.level = 1440 AND ${and(scopeConditions(scope, query, 'r'))}
    ),
    pieces AS MATERIALIZED (
      SELECT g.label, p.level, p.lo, p.hi FROM (${segments}) g CROSS JOIN LATERAL rollup_pieces(g.s, g.e) p
    ),
    moved AS MATERIALIZED (
      SELECT DISTINCT m.conversion_id AS id FROM conversion_history m WHERE m.change_key >= (SELECT w FROM st)
    ),
    parts AS (
      SELECT p.label, r.campaign_id, r.adset_id, r.ad_id, r.event, r.currency::text AS currency, r.status, r.conversions AS n, r.revenue AS rev
      FROM pieces p
      JOIN conversion_rollups r ON r.level = p.level AND r.bucket >= p.lo AND r.bucket < p.hi
      WHERE p.level > 0 AND ${rowScope('r')}
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, c.currency::text, c.status, 1, c.payout
      FROM pieces p
      JOIN conversions c ON c.received_at >= p.lo AND c.received_at < p.hi
      WHERE p.level = 0 AND ${rowScope('c')}
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, c.currency::text, c.status, 1, c.payout
      FROM conversions c
      WHERE c.stored_key >= (SELECT w FROM st) AND ${rowScope('c')} AND ${inRange('c')}
        AND NOT EXISTS (SELECT FROM pieces p WHERE p.level = 0 AND c.received_at >= p.lo AND c.received_at < p.hi)
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, s.currency::text, s.status, s.n, s.n * s.payout
      FROM moved
      JOIN conversions c ON c.id = moved.id
      CROSS JOIN LATERAL (
        SELECT c.status, c.payout, c.currency, 1 AS n
        UNION ALL
        (SELECT f.status, f.payout, f.currency, -1 FROM conversion_history f
         WHERE f.conversion_id = c.id AND (f.change_key < (SELECT w FROM st) OR f.change_key IS NULL) ORDER BY f.id DESC LIMIT 1)
      ) s
      WHERE c.stored_key < (SELECT w FROM st) AND ${rowScope('c', 's')} AND ${inRange('c')}
        AND NOT EXISTS (SELECT FROM pieces p WHERE p.level = 0 AND c.received_at >= p.lo AND c.received_at < p.hi)
    )
    SELECT ${Prisma.raw(output.join(', '))}, ${Prisma.raw(statusColumns('status', 'n', 'rev'))}
    FROM parts
    GROUP BY ${Prisma.raw(groupKeys.join(', '))}
    HAVING sum(n) > 0
    ORDER BY ${Prisma.raw(output.map((_, index) => index + 1).join(', '))}`)
  return rows
}

/**
 * Runs folds in the background: every `intervalMs`, and at once again while a bounded step left
 * changes waiting. A failed fold (the store down) is logged once per streak and tried again later.
 */
export class RollupFolder {
  #timer: NodeJS.Timeout | undefined
  #running: Promise<void> | undefined
  #stopped = false
  #failing = false

  constructor(
    private readonly prisma: PrismaClient,
    private readonly options: { intervalMs: number; onError: (error: unknown) => void; onRecovered?: () => void },
  ) {}

  start(): void {
    this.#schedule(this.options.intervalMs)
  }

  #schedule(delay: number): void {
    if (this.#stopped) return
    this.#timer = setTimeout(() => {
      this.#running = this.#run().finally(() => {
        this.#running = undefined
      })
    }, delay)
    this.#timer.unref()
  }

  async #run(): Promise<void> {
    let again = false
    try {
      const result = await foldRollups(this.prisma)
      again = result.more
      if (this.#failing) this.options.onRecovered?.()
      this.#failing = false
    } catch (error) {
      if (!this.#failing) this.options.onError(error)
      this.#failing = true
    }
    this.#schedule(again ? 0 : this.options.intervalMs)
  }

  /** Stops the timer and waits for a fold in progress. */
  async stop(): Promise<void> {
    this.#stopped = true
    clearTimeout(this.#timer)
    await this.#running
  }
}
