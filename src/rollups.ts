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
// The fold sees a conversion's counted fields (status, payout, currency) change only through a
// status move (the feed's `updated` change): every write path moves the status when it changes them
// (src/lifecycle.ts). A write that changed a payout without a move would not reach the rollups.
//
// A time range is tiled by the widest whole buckets (SQL function rollup_pieces): a day in any zone
// starts on a quarter hour (today's offsets are all multiples of 15 minutes), so `interval=day` is
// exact in every zone; what is left off a 15-minute edge (a `from` at 12:07, a historical offset)
// is read from the rows. A filter the rollups do not hold (`transaction_id`) reads the rows.
import type { SheetScope } from './conversions.ts'
import type { Database } from './database.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { STATUSES } from './lifecycle.ts'
import { LONG_RUNNING } from './pg-pool.ts'
import type { SummaryQuery, SummaryRow } from './schemas/management.ts'

/** Changes folded per statement at most (more when many share the last key). */
export const FOLD_CHUNK = 100_000

// Held for the fold's transaction: one instance folds at a time.
const FOLD_LOCK = 7_105_321_001n

// The figures of a rollup row: count and payout sum of each status.
const FIGURES = STATUSES.flatMap((status) => [status, `${status}_revenue`])
const FIGURE_COLUMNS = FIGURES.join(', ')

// One fold step. The range is [watermark, u): u is the horizon, or lower when more than $1 changes
// wait (the first key past the $1-th, so that a step always makes progress). A conversion stored in
// the range counts with its first state (the first history entry when it has moved since, else the
// row); a move in the range counts its new state and takes back the state before it.
export const FOLD_SQL = /* sql */ `${LONG_RUNNING}
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
), changes AS (
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
    COALESCE(campaign_id, '') AS campaign_id, COALESCE(adset_id, '') AS adset_id, COALESCE(ad_id, '') AS ad_id, event, currency,
    ${STATUSES.map((status) => `COALESCE(sum(n) FILTER (WHERE status = '${status}'), 0) AS ${status}, COALESCE(sum(n * payout) FILTER (WHERE status = '${status}'), 0) AS ${status}_revenue`).join(', ')},
    count(*) AS changes
  FROM changes
  GROUP BY 1, 2, 3, 4, 5, 6, 7
), folded AS (
  INSERT INTO conversion_rollups AS r (sheet_id, level, phase, bucket, campaign_id, adset_id, ad_id, event, currency, ${FIGURE_COLUMNS})
  SELECT d.sheet_id, l.level, l.phase,
    date_bin(make_interval(mins => l.level), d.quarter - make_interval(mins => l.phase), '2001-01-01 00:00:00+00') + make_interval(mins => l.phase),
    d.campaign_id, d.adset_id, d.ad_id, d.event, d.currency, ${FIGURES.map((column) => `sum(d.${column})`).join(', ')}
  FROM delta d
  CROSS JOIN (SELECT * FROM (VALUES (15::smallint, 0::smallint), (60::smallint, 0::smallint), (360::smallint, 0::smallint)) AS v(level, phase)
              UNION ALL SELECT 1440::smallint, phase FROM rollup_phases WHERE ready) AS l
  GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
  HAVING ${FIGURES.map((column) => `sum(d.${column}) <> 0`).join(' OR ')}
  -- In key order: rows a summary reads together (a sheet's buckets of one level) then sit together
  -- on disk. Inserted in hash order they were spread over the table, and at 10^6 rows the all-time
  -- summary read 54,000 rows from as many pages: 48 ms became 200 ms.
  ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9
  ON CONFLICT (sheet_id, level, phase, bucket, campaign_id, adset_id, ad_id, event, currency) DO UPDATE SET
    ${FIGURES.map((column) => `${column} = r.${column} + excluded.${column}`).join(', ')}
  RETURNING 1
), advanced AS (
  UPDATE rollup_state SET watermark = bound.u FROM bound WHERE bound.u > bound.w RETURNING 1
)
SELECT (SELECT COALESCE(sum(changes), 0) FROM delta)::int AS changes, (SELECT u < (SELECT h FROM st) FROM bound) AS more`

export interface FoldResult {
  /** Changes folded (an insert counts one, a move two: its new state and the old one taken back). */
  changes: number
  /** Whether changes below the horizon are still waiting (the step was bounded). */
  more: boolean
  /** Whether another instance was folding, so this one did nothing. */
  busy: boolean
}

// Whether any change below the horizon waits, or a day phase to fill: a cheap read, so that an
// idle instance's folds cost next to nothing (a fold is a transaction of a large statement).
const WAITING_SQL = `
SELECT EXISTS (SELECT FROM conversions c WHERE c.stored_key >= s.watermark AND c.stored_key < s.h)
    OR EXISTS (SELECT FROM conversion_history m WHERE m.change_key >= s.watermark AND m.change_key < s.h)
    OR EXISTS (SELECT FROM rollup_phases WHERE NOT ready) AS waiting
FROM (SELECT watermark, pg_snapshot_xmin(pg_current_snapshot()) AS h FROM rollup_state) s`

// A new day phase: its days summed from the 15-minute buckets, which hold exactly what is folded
// (the fold lock is held, so no fold runs meanwhile); from then on every fold adds to it. The
// insert runs to completion in the same statement, read or not (a data-modifying WITH).
const FILL_PHASE_SQL = `${LONG_RUNNING}
WITH filled AS (
  INSERT INTO conversion_rollups (sheet_id, level, phase, bucket, campaign_id, adset_id, ad_id, event, currency, ${FIGURE_COLUMNS})
  SELECT sheet_id, 1440, $1::smallint,
    date_bin('1 day', bucket - make_interval(mins => $1::int), '2001-01-01 00:00:00+00') + make_interval(mins => $1::int),
    campaign_id, adset_id, ad_id, event, currency, ${FIGURES.map((column) => `sum(${column})`).join(', ')}
  FROM conversion_rollups WHERE level = 15 AND phase = 0
  GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
)
UPDATE rollup_phases SET ready = true WHERE phase = $1::smallint`

/** Folds up to about `chunk` waiting changes into the rollups (or fills a new day phase), in one transaction. */
export async function foldRollups(prisma: PrismaClient, chunk = FOLD_CHUNK): Promise<FoldResult> {
  const [state] = await prisma.$queryRawUnsafe<Array<{ waiting: boolean }>>(WAITING_SQL)
  if (!state?.waiting) return { changes: 0, more: false, busy: false }
  return prisma.$transaction(
    async (tx) => {
      const [lock] = await tx.$queryRaw<Array<{ locked: boolean }>>`SELECT pg_try_advisory_xact_lock(${FOLD_LOCK}) AS locked`
      if (!lock?.locked) return { changes: 0, more: false, busy: true }
      const [phase] = await tx.$queryRaw<Array<{ phase: number }>>`SELECT phase FROM rollup_phases WHERE NOT ready ORDER BY phase LIMIT 1`
      if (phase) {
        await tx.$executeRawUnsafe('SET LOCAL statement_timeout = 0')
        await tx.$executeRawUnsafe(FILL_PHASE_SQL, phase.phase)
        return { changes: 0, more: true, busy: false }
      }
      // Hash aggregation, not a sort of every change by its text keys (the planner, misled by the
      // CTEs' estimates, sorted: 43 of the 86 ms a fold of 30,000 new conversions took).
      await tx.$executeRawUnsafe('SET LOCAL enable_sort = off')
      // No request timeout: the first fold after an upgrade takes every stored row at once (they
      // share the migration's transaction id, a key no bound can split), and must not fail forever.
      await tx.$executeRawUnsafe('SET LOCAL statement_timeout = 0')
      const [row] = await tx.$queryRawUnsafe<Array<{ changes: number; more: boolean }>>(FOLD_SQL, chunk)
      return { changes: row?.changes ?? 0, more: row?.more ?? false, busy: false }
    },
    // A first fold after an upgrade or a large import may take many minutes (10^7 rows sharing the
    // migration's key: about 8 on a 2-core machine); it runs in the background. Neither the
    // transaction's timeout nor the pool's read timeout (LONG_RUNNING) may stop it, or it fails forever.
    { maxWait: 10_000, timeout: 86_400_000 },
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

/** A row's (or a history entry's) figures as rollup columns: its count and payout under its status, zeros under the others. */
const rowFigures = (status: string, n: string, payout: string) =>
  STATUSES.map((s) => `CASE WHEN ${status} = '${s}' THEN ${n} ELSE 0 END, CASE WHEN ${status} = '${s}' THEN ${n} * ${payout} END`).join(', ')

/** The id columns of each `group_by`. */
export const GROUP_COLUMNS = {
  campaign: ['campaign_id'],
  adset: ['campaign_id', 'adset_id'],
  ad: ['campaign_id', 'adset_id', 'ad_id'],
  event: ['event'],
} as const

/** The filters the rollups hold (all but status and transaction id), on an alias; `state` gives the currency. */
export function dimensionConditions(query: Pick<SummaryQuery, 'campaign_id' | 'adset_id' | 'ad_id' | 'event' | 'currency'>, alias: string, state = alias): Prisma.Sql[] {
  const where: Prisma.Sql[] = []
  const values = { campaign_id: query.campaign_id, adset_id: query.adset_id, ad_id: query.ad_id, event: query.event, currency: query.currency?.toUpperCase() }
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined) continue
    where.push(Prisma.sql`${Prisma.raw(`${name === 'currency' ? state : alias}.${name}`)} = ${value}`)
  }
  return where
}

function scopeConditions(scope: SheetScope, query: SummaryQuery, alias: string): Prisma.Sql[] {
  const where: Prisma.Sql[] = []
  if (query.sheet_id !== undefined) where.push(Prisma.sql`${Prisma.raw(alias)}.sheet_id = ${query.sheet_id}`)
  if (scope !== null) where.push(Prisma.sql`${Prisma.raw(alias)}.sheet_id = ANY(${[...scope]}::text[])`)
  return where
}

/** Conditions joined by AND; none is `true`. */
export const and = (where: Prisma.Sql[]) => (where.length ? Prisma.join(where, ' AND ') : Prisma.sql`true`)

// The zones whose day phases this process has registered, per client.
const registeredZones = new WeakMap<PrismaClient, Set<string>>()

/**
 * Asks for the zone's day phases (where its days started over the last 400 days, both sides of a
 * clock change) to be kept, once per zone and process; the next fold fills a new one. Until then
 * the zone's days are read from the UTC buckets, exact as well.
 */
async function registerPhases(prisma: PrismaClient, tz: string): Promise<void> {
  const zones = registeredZones.get(prisma) ?? new Set<string>()
  registeredZones.set(prisma, zones)
  if (zones.has(tz)) return
  await prisma.$executeRaw`
    INSERT INTO rollup_phases (phase)
    SELECT DISTINCT (extract(epoch FROM s)::bigint % 86400 + 86400) % 86400 / 60
    FROM (SELECT rollup_day_start(d::date, ${tz}) AS s FROM generate_series(current_date - 400, current_date, interval '1 day') AS d) days
    WHERE s IS NOT NULL AND extract(epoch FROM s)::bigint % 900 = 0
    ON CONFLICT DO NOTHING`
  zones.add(tz)
}

/**
 * The summary from the rollups plus the rows changed since they were folded (see the top of this
 * file). `from` and `to` are already parsed; `tz` is a zone the database knows.
 */
export async function summarizeFromRollups(
  db: Database,
  scope: SheetScope,
  query: SummaryQuery,
  range: { from?: Date; to?: Date },
  tz: string,
): Promise<SummaryRow[]> {
  const from = range.from ?? '-infinity'
  const to = range.to ?? 'infinity'
  // An empty id matches no row (missing ids are stored as NULL), while in the rollups '' stands for
  // a missing id: answered here, not by the rollups.
  if (query.campaign_id === '' || query.adset_id === '' || query.ad_id === '') return []
  const byDay = query.interval === 'day'
  if (byDay) await registerPhases(db.prisma, tz)
  const label = (column: string) => (byDay ? Prisma.sql`to_char(${Prisma.raw(column)} AT TIME ZONE ${tz}, 'YYYY-MM-DD')` : Prisma.sql`''`)
  const rowDims = (alias: string) =>
    Prisma.raw(`COALESCE(${alias}.campaign_id, '') AS campaign_id, COALESCE(${alias}.adset_id, '') AS adset_id, COALESCE(${alias}.ad_id, '') AS ad_id, ${alias}.event`)
  const inRange = (alias: string) => Prisma.sql`${Prisma.raw(alias)}.received_at >= ${from}::timestamptz AND ${Prisma.raw(alias)}.received_at < ${to}::timestamptz`
  const statusFilter = (state: string) => (query.status === undefined ? [] : [Prisma.sql`${Prisma.raw(state)}.status = ${query.status}`])
  const rowScope = (alias: string, state = alias) =>
    and([...scopeConditions(scope, query, alias), ...dimensionConditions(query, alias, state), ...statusFilter(state)])
  const rollupScope = and([...scopeConditions(scope, query, 'r'), ...dimensionConditions(query, 'r')])
  // The local days of the span (or the span itself). A whole day of 24 hours whose phase is kept is
  // one bucket; any other (clipped by the range, 23 or 25 hours long) is tiled by rollup_pieces.
  const segments = byDay
    ? Prisma.sql`
      SELECT label, s, e,
        CASE WHEN e - s = interval '24 hours' AND extract(epoch FROM s) % 60 = 0
          THEN (SELECT phase FROM rollup_phases WHERE ready AND phase * 60 = (extract(epoch FROM s)::bigint % 86400 + 86400) % 86400) END AS phase
      FROM (
        SELECT label, greatest(s, lo) AS s, least(COALESCE(lead(s) OVER (ORDER BY s), hi), hi) AS e
        FROM (
          SELECT to_char(d, 'YYYY-MM-DD') AS label, rollup_day_start(d::date, ${tz}) AS s, span.lo, span.hi
          FROM span, generate_series((span.lo AT TIME ZONE ${tz})::date, ((span.hi - interval '1 microsecond') AT TIME ZONE ${tz})::date, interval '1 day') AS d
          WHERE span.first IS NOT NULL AND span.lo < span.hi
        ) days
        WHERE s IS NOT NULL
      ) clipped`
    : Prisma.sql`SELECT '' AS label, lo AS s, hi AS e, NULL::smallint AS phase FROM span WHERE first IS NOT NULL AND lo < hi`
  // Grouped by the output's own expressions, so that one sort serves the grouping and the order.
  const groupKeys = ['label', ...GROUP_COLUMNS[query.group_by].map((column) => `NULLIF(${column}, '')`), 'currency']
  const output = [
    ...(byDay ? ['label AS day'] : []),
    ...GROUP_COLUMNS[query.group_by].map((column) => `NULLIF(${column}, '') AS ${column}`),
    'currency',
  ]
  // With a status filter only that status counts (as in a scan of its rows).
  const counted = STATUSES.filter((status) => query.status === undefined || query.status === status)
  const figures = STATUSES.map((status) => {
    const prefix = status === 'approved' ? '' : `${status}_`
    const [count, revenue] = counted.includes(status) ? [`sum(${status})`, `COALESCE(sum(${status}_revenue), 0)`] : ['0', '0']
    return `${count}::int AS ${prefix}conversions, ${revenueText(revenue)} AS ${prefix}revenue`
  }).join(', ')
  // One statement, so one snapshot: the rollups and the watermark they were folded to (\`st\`) are
  // read together, and a fold that commits meanwhile is not half seen. The watermark read just before
  // (\`w\`, never above the one the statement sees: it only grows) also goes in as a value, so that
  // PostgreSQL plans the rows changed since it from the statistics (an index range over the few
  // newest, not a third of the table); \`>= w AND >= st.w\` is \`>= st.w\`. Through pg directly
  // (db.query): no interactive transaction's round trips, and rows as pg gives them.
  const [state] = await db.query<{ w: string }>({ text: 'SELECT watermark::text AS w FROM rollup_state', values: [] })
  const w = state!.w
  const sql = Prisma.sql`
    WITH st AS MATERIALIZED (SELECT watermark AS w FROM rollup_state),
    -- The sheet's first and last day, each from one end of the buckets' index (an aggregate over
    -- all of them read 54,000 index entries at 10^7 conversions: 13 ms).
    ends AS MATERIALIZED (
      SELECT (SELECT r.bucket FROM conversion_rollups r WHERE r.level = 1440 AND r.phase = 0 AND ${and(scopeConditions(scope, query, 'r'))}
              ORDER BY r.bucket LIMIT 1) AS first,
             (SELECT r.bucket FROM conversion_rollups r WHERE r.level = 1440 AND r.phase = 0 AND ${and(scopeConditions(scope, query, 'r'))}
              ORDER BY r.bucket DESC LIMIT 1) AS last
    ),
    span AS MATERIALIZED (
      SELECT greatest(first, ${from}::timestamptz) AS lo, least(last + interval '1 day', ${to}::timestamptz) AS hi, first FROM ends
    ),
    segments AS MATERIALIZED (${segments}),
    pieces AS MATERIALIZED (
      SELECT g.label, 1440::smallint AS level, g.phase, g.s AS lo, g.e AS hi FROM segments g WHERE g.phase IS NOT NULL
      UNION ALL
      SELECT g.label, p.level, 0::smallint, p.lo, p.hi FROM segments g CROSS JOIN LATERAL rollup_pieces(g.s, g.e) p WHERE g.phase IS NULL
    ),
    moved AS MATERIALIZED (
      SELECT DISTINCT m.conversion_id AS id FROM conversion_history m WHERE m.change_key >= ${w}::xid8 AND m.change_key >= (SELECT w FROM st)
    ),
    parts AS (
      SELECT p.label, r.campaign_id, r.adset_id, r.ad_id, r.event, r.currency::text AS currency,
        ${Prisma.raw(STATUSES.map((status) => `r.${status}::int, r.${status}_revenue`).join(', '))}
      FROM pieces p
      CROSS JOIN LATERAL (
        SELECT * FROM conversion_rollups r
        WHERE r.level = p.level AND r.phase = p.phase AND r.bucket >= p.lo AND r.bucket < p.hi AND ${rollupScope} OFFSET 0
      ) r
      WHERE p.level > 0
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, c.currency::text, ${Prisma.raw(rowFigures('c.status', '1', 'c.payout'))}
      FROM pieces p
      CROSS JOIN LATERAL (SELECT * FROM conversions c WHERE c.received_at >= p.lo AND c.received_at < p.hi AND ${rowScope('c')} OFFSET 0) c
      WHERE p.level = 0
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, c.currency::text, ${Prisma.raw(rowFigures('c.status', '1', 'c.payout'))}
      FROM conversions c
      WHERE c.stored_key >= ${w}::xid8 AND c.stored_key >= (SELECT w FROM st) AND ${rowScope('c')} AND ${inRange('c')}
        AND NOT EXISTS (SELECT FROM pieces p WHERE p.level = 0 AND c.received_at >= p.lo AND c.received_at < p.hi)
      UNION ALL
      SELECT ${label('c.received_at')}, ${rowDims('c')}, s.currency::text, ${Prisma.raw(rowFigures('s.status', 's.n', 's.payout'))}
      FROM moved
      CROSS JOIN LATERAL (SELECT * FROM conversions c WHERE c.id = moved.id OFFSET 0) c
      CROSS JOIN LATERAL (
        SELECT c.status, c.payout, c.currency, 1 AS n
        UNION ALL
        (SELECT f.status, f.payout, f.currency, -1 FROM conversion_history f
         WHERE f.conversion_id = c.id AND (f.change_key < (SELECT w FROM st) OR f.change_key IS NULL) ORDER BY f.id DESC LIMIT 1)
      ) s
      WHERE c.stored_key < (SELECT w FROM st) AND ${rowScope('c', 's')} AND ${inRange('c')}
        AND NOT EXISTS (SELECT FROM pieces p WHERE p.level = 0 AND c.received_at >= p.lo AND c.received_at < p.hi)
    )
    SELECT ${Prisma.raw(output.join(', '))}, ${Prisma.raw(figures)}
    FROM parts
    GROUP BY ${Prisma.raw(groupKeys.join(', '))}
    HAVING ${Prisma.raw(counted.map((status) => `sum(${status})`).join(' + '))} > 0
    ORDER BY ${Prisma.raw(groupKeys.join(', '))}`
  return db.query<SummaryRow>({ text: sql.text, values: sql.values })
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
