// Reading stored conversions back: the filtered, keyset-paginated list, one conversion, and the
// summary (conversions + revenue per campaign / ad set / ad, per currency, optionally per day).
// Raw SQL: payouts are read as text so that decimals stay exact (`12.50` stays `12.50`).
import type { Database } from './database.ts'
import { InputError } from './errors.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { and, dimensionConditions, GROUP_COLUMNS, statusColumns, summarizeFromRollups } from './rollups.ts'
import type { Conversion, ConversionQuery, HistoryEntry, SummaryQuery, SummaryRow } from './schemas/management.ts'

/** The sheets a caller may see: a list, or null for every sheet (a global key). */
export type SheetScope = readonly string[] | null

interface ConversionRow extends Omit<Conversion, 'id' | 'payout' | 'currency' | 'received_at' | 'updated_at'> {
  id_text: string
  payout_text: string | null
  currency_text: string
  received_at: Date
  updated_at: Date | null
}

export function toConversion({ id_text, payout_text, currency_text, received_at, updated_at, ...row }: ConversionRow): Conversion {
  return {
    id: id_text,
    ...row,
    payout: payout_text,
    currency: currency_text,
    received_at: received_at.toISOString(),
    updated_at: updated_at?.toISOString() ?? null,
  }
}

const MAX_ID = 9_223_372_036_854_775_807n

/** Whether a decimal id fits a bigint column. */
export function isStorableId(id: string): boolean {
  return /^\d{1,19}$/.test(id) && BigInt(id) <= MAX_ID
}

function isStorableTime(date: Date): boolean {
  const year = date.getUTCFullYear()
  return !Number.isNaN(date.getTime()) && year >= 1 && year <= 9999
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

function daysInMonth(year: number, month: number): number {
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0)
  return month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!
}

/** Parses an ISO 8601 filter value (its pattern is checked by the route schema). */
export function parseTime(name: string, value: string): Date {
  const date = new Date(value.length === 10 ? `${value}T00:00:00Z` : value)
  // A day that does not exist (2024-02-30) must not roll over into the next month. (Read without
  // splitting: the import parses a time per line.)
  const year = Number(value.slice(0, 4))
  const month = Number(value.slice(5, 7))
  const day = Number(value.slice(8, 10))
  if (!isStorableTime(date) || !(month >= 1 && month <= 12 && day >= 1 && day <= daysInMonth(year, month))) {
    throw new InputError('invalid_parameter', name, `${name} ${JSON.stringify(value)} is not a valid ISO 8601 time`)
  }
  return date
}

/** The WHERE conditions of the list and summary filters, within the caller's sheets (columns of `alias`). */
function conditions(scope: SheetScope, query: Omit<ConversionQuery, 'limit' | 'cursor' | 'order'>, alias = ''): Prisma.Sql[] {
  const column = (name: string) => Prisma.raw(alias ? `${alias}.${name}` : name)
  const where: Prisma.Sql[] = []
  if (query.sheet_id !== undefined) where.push(Prisma.sql`${column('sheet_id')} = ${query.sheet_id}`)
  if (scope !== null) where.push(Prisma.sql`${column('sheet_id')} = ANY(${[...scope]}::text[])`)
  if (query.from !== undefined) where.push(Prisma.sql`${column('received_at')} >= ${parseTime('from', query.from)}`)
  if (query.to !== undefined) where.push(Prisma.sql`${column('received_at')} < ${parseTime('to', query.to)}`)
  for (const name of ['campaign_id', 'adset_id', 'ad_id', 'transaction_id'] as const) {
    const value = query[name]
    if (value !== undefined) where.push(Prisma.sql`${column(name)} = ${value}`)
  }
  if (query.currency !== undefined) where.push(Prisma.sql`${column('currency')} = ${query.currency.toUpperCase()}`)
  if (query.status !== undefined) where.push(Prisma.sql`${column('status')} = ${query.status}`)
  // The base conversion is stored with event '': `event=` selects it.
  if (query.event !== undefined) where.push(Prisma.sql`${column('event')} = ${query.event}`)
  return where
}

const whereClause = (where: Prisma.Sql[]) => (where.length ? Prisma.sql`WHERE ${Prisma.join(where, ' AND ')}` : Prisma.empty)

// Output columns are renamed (id_text): ORDER BY resolves a bare name to an output column first, and
// ordering by the text of an id ("9" > "10") would break the keyset order.
const CONVERSION_COLUMNS = Prisma.sql`c.id::text AS id_text, c.sheet_id, c.transaction_id, c.payout::text AS payout_text,
  c.currency::text AS currency_text, c.campaign_id, c.adset_id, c.ad_id, NULLIF(c.event, '') AS event, c.status, c.network_status,
  c.received_at, c.updated_at`

// A cursor names the last row of a page by its position (received_at, id) and the order it was read in.
interface Position {
  order: 'asc' | 'desc'
  at: Date
  id: string
}

export function encodeCursor(position: Position): string {
  return Buffer.from(`${position.order}|${position.at.toISOString()}|${position.id}`).toString('base64url')
}

export function decodeCursor(cursor: string, order: 'asc' | 'desc'): Position {
  const [cursorOrder, at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|')
  const date = new Date(at ?? '')
  if (cursorOrder !== order || !isStorableTime(date) || !isStorableId(id ?? '')) {
    throw new InputError('invalid_parameter', 'cursor', 'cursor is not a next_cursor of this list in this order')
  }
  return { order, at: date, id: id! }
}

/** A keyset page: the first `limit` rows, and a cursor at the last of them when more follow. */
export function keysetPage<Row extends { received_at: Date; id_text: string }, Item>(
  rows: Row[],
  limit: number,
  order: 'asc' | 'desc',
  toItem: (row: Row) => Item,
): { data: Item[]; next_cursor: string | null } {
  const page = rows.slice(0, limit)
  const last = page.at(-1)
  return {
    data: page.map(toItem),
    next_cursor: rows.length > limit && last ? encodeCursor({ order, at: last.received_at, id: last.id_text }) : null,
  }
}

export async function listConversions(
  prisma: PrismaClient,
  scope: SheetScope,
  query: ConversionQuery,
): Promise<{ data: Conversion[]; next_cursor: string | null }> {
  const order = query.order ?? 'desc'
  const limit = query.limit ?? 50
  const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor, order)
  const where = conditions(scope, query, 'c')
  if (after) {
    // Keyset: strictly past the last row seen, so a row is never read twice, and rows stored while
    // paging can not shift the rows that were there before.
    where.push(
      order === 'desc'
        ? Prisma.sql`(c.received_at, c.id) < (${after.at}, ${after.id}::bigint)`
        : Prisma.sql`(c.received_at, c.id) > (${after.at}, ${after.id}::bigint)`,
    )
  }
  const direction = Prisma.raw(order === 'desc' ? 'DESC' : 'ASC')
  // Each sheet's first rows from its index (sheet_id, received_at, id), then merged, so that a page
  // costs the same whatever the table holds; one ORDER BY over every sheet's rows would read and
  // sort them all.
  const sheets =
    query.sheet_id !== undefined
      ? Prisma.sql`SELECT ${query.sheet_id}::text AS sheet_id`
      : scope === null
        ? Prisma.sql`SELECT sheet_id FROM sheets`
        : Prisma.sql`SELECT unnest(${[...scope]}::text[]) AS sheet_id`
  const page: Page = { where, order, direction, limit }
  let statement = scanned(Prisma.sql`(${sheets})`, page)
  if (guidedByRollups(query)) {
    // The watermark as a value too, so that PostgreSQL plans the rows changed since it from the
    // statistics (a range of the change keys' indexes), as the summary does (src/rollups.ts).
    const [state] = await prisma.$queryRaw<Array<{ w: string }>>`SELECT watermark::text AS w FROM rollup_state`
    statement = guided(query, sheets, page, after?.at, state!.w)
  }
  const rows = await prisma.$queryRaw<ConversionRow[]>(statement)
  return keysetPage(
    rows.map(({ sort_id: _, ...row }: ConversionRow & { sort_id?: unknown }) => row),
    limit,
    order,
    toConversion,
  )
}

/** A list page's conditions (the caller's sheets, the filters, past the cursor) and order. */
interface Page {
  where: Prisma.Sql[]
  order: 'asc' | 'desc'
  direction: Prisma.Sql
  limit: number
}

/** The page read from each sheet's time index (sheets: a relation of sheet_id), merged. */
const scanned = (sheets: Prisma.Sql, { where, direction, limit }: Page) => Prisma.sql`
  SELECT p.* FROM ${sheets} s
  CROSS JOIN LATERAL (
    SELECT ${CONVERSION_COLUMNS}, c.id AS sort_id FROM conversions c WHERE c.sheet_id = s.sheet_id AND ${and(where)}
    ORDER BY c.received_at ${direction}, c.id ${direction}
    LIMIT ${limit + 1}
  ) p
  ORDER BY p.received_at ${direction}, p.sort_id ${direction}
  LIMIT ${limit + 1}`

/** Filters the summary's pre-aggregates can count: a list filtered by one of them is guided by them. */
const ROLLUP_FILTERS = ['campaign_id', 'adset_id', 'ad_id', 'event', 'currency', 'status'] as const

// A transaction id is found through its own index; a list without a filter finds its rows at once.
const guidedByRollups = (query: ConversionQuery) => query.transaction_id === undefined && ROLLUP_FILTERS.some((name) => query[name] !== undefined)

/**
 * A page of a list filtered by columns without an index (currency, status, campaign, ad set, ad,
 * event), guided by the summary's UTC day rollups, so that the time grows neither with the rows
 * that do not match nor with the sheets that hold none: a scan from the newest row would read every
 * non-matching row newer than the page (a campaign that ended a month ago: a month of rows), in
 * every sheet of the caller's.
 *
 * - `walk`: the days from the cursor in the page's order that hold a match in one of the caller's
 *   sheets, with the sheets it is in and the matches counted so far; it stops at the day (`bound`)
 *   where they reach the page size (limit + 1). A sheet's next day with a match is one probe of an
 *   index over the day rollups that holds the filter's column or status (migration
 *   20261130100000_rollup_day_indexes), however many days without one lie between. Every sheet is
 *   probed once (`heads`); a step takes the next day of all and probes again only the sheets that
 *   held it, so a page costs a probe per sheet plus two per (sheet, day) it walks, whatever the
 *   days and sheets without matches. A recursive query cannot be planned as a scan of the whole
 *   rollup table, as a window over it was (0.5 to 1 s at 10^7).
 * - The rows: each walked day's in each sheet whose rollups count a match (its first limit + 1 from
 *   the sheet's index), and those changed since the rollups' watermark (stored or moved since; read
 *   by their change keys, with the watermark read just before as a value, so that they are planned
 *   as the few rows they are), filtered as the list asks.
 * - Exact whatever the rollups hold: every conversion that matches now either was folded with the
 *   values it has now (its day counts it) or changed since the watermark. So when the page fills
 *   with rows of `bound`'s side, it is the page; when the rollups never reach the page size, every
 *   match was read. Otherwise (conversions counted by the rollups have moved away since) the page is
 *   read by the scan.
 * What it does not bound: a day with few matches among many rows is read until the page fills.
 */
function guided(query: ConversionQuery, sheets: Prisma.Sql, page: Page, cursorAt: Date | undefined, watermark: string): Prisma.Sql {
  const { where, order, direction, limit } = page
  const desc = order === 'desc'
  // The matches a rollup row counts, and its condition (an index's predicate for a status).
  const count = Prisma.raw(query.status !== undefined ? `r.${query.status}` : 'r.approved + r.pending + r.rejected')
  const dims = [...dimensionConditions(query, 'r'), Prisma.sql`${count} > 0`]
  // Days that may hold rows of the page: within the range and past the cursor.
  const range: Prisma.Sql[] = []
  if (query.from !== undefined) range.push(Prisma.sql`r.bucket > ${parseTime('from', query.from)}::timestamptz - interval '1 day'`)
  if (query.to !== undefined) range.push(Prisma.sql`r.bucket < ${parseTime('to', query.to)}`)
  if (cursorAt) range.push(desc ? Prisma.sql`r.bucket <= ${cursorAt}` : Prisma.sql`r.bucket > ${cursorAt}::timestamptz - interval '1 day'`)
  const dayRows = Prisma.sql`r.level = 1440 AND r.phase = 0 AND ${and(dims)}`
  const [latest, before] = desc ? [Prisma.raw('max'), Prisma.raw('<')] : [Prisma.raw('min'), Prisma.raw('>')]
  // A sheet's next day with a match in the page's order (after `day`, or the first): one probe.
  const probe = (sheet: Prisma.Sql, day?: Prisma.Sql) => Prisma.sql`(
    SELECT ${latest}(r.bucket) FROM conversion_rollups r WHERE r.sheet_id = ${sheet} AND ${dayRows} AND ${and(range)}${
      day ? Prisma.sql` AND r.bucket ${before} ${day}` : Prisma.empty
    })::timestamptz`
  // One step from the sheets' next days (heads: sheet ids `hs`, days `hd`, of relation `h`): the next
  // day of all, the sheets whose next day it is and the matches the rollups count there, and the
  // heads after it (those sheets probed again, past it; the others' next days stay as they were).
  const step = (h: string) => {
    const heads = Prisma.raw(`unnest(${h}.hs, ${h}.hd) AS x (s, d)`)
    return Prisma.sql`
      SELECT t.day, t.sheets, m.n, nh.hs, nh.hd
      FROM (SELECT ${latest}(x.d) AS day FROM ${heads}) t0
      CROSS JOIN LATERAL (SELECT t0.day, array_agg(x.s) AS sheets FROM ${heads} WHERE x.d = t0.day) t
      CROSS JOIN LATERAL (SELECT COALESCE(sum(${count}), 0) AS n FROM conversion_rollups r WHERE r.sheet_id = ANY(t.sheets) AND ${dayRows} AND r.bucket = t.day) m
      CROSS JOIN LATERAL (
        SELECT array_agg(y.s)::text[] AS hs, array_agg(y.d)::timestamptz[] AS hd FROM (
          SELECT x.s, x.d FROM ${heads} WHERE x.d <> t.day
          UNION ALL
          SELECT p.s, p.d FROM (SELECT z.s, ${probe(Prisma.sql`z.s`, Prisma.sql`t.day`)} AS d FROM unnest(t.sheets) AS z (s)) p WHERE p.d IS NOT NULL
        ) y
      ) nh
      WHERE t0.day IS NOT NULL`
  }
  const bound = Prisma.sql`(SELECT day FROM walk WHERE seen >= ${limit + 1})`
  // The rows on bound's side: for desc those of its day and later, for asc of its day and earlier.
  const onBoundSide = desc ? Prisma.sql`g.received_at >= ${bound}` : Prisma.sql`g.received_at < ${bound} + interval '1 day'`
  return Prisma.sql`
    WITH RECURSIVE st AS MATERIALIZED (SELECT watermark AS w FROM rollup_state),
    scope AS MATERIALIZED (${sheets}),
    -- Each sheet's first day with a match.
    heads AS MATERIALIZED (
      SELECT array_agg(p.s)::text[] AS hs, array_agg(p.d)::timestamptz[] AS hd
      FROM (SELECT s.sheet_id AS s, ${probe(Prisma.sql`s.sheet_id`)} AS d FROM scope s) p WHERE p.d IS NOT NULL
    ),
    -- The days with a match from the cursor, in the page's order, with the sheets that hold one and
    -- the matches counted so far; it stops at the day where they reach the page size.
    walk (day, sheets, seen, hs, hd) AS (
      SELECT w.day, w.sheets, w.n, w.hs, w.hd FROM heads CROSS JOIN LATERAL (${step('heads')}) w
      UNION ALL
      SELECT w.day, w.sheets, walk.seen + w.n, w.hs, w.hd FROM walk CROSS JOIN LATERAL (${step('walk')}) w
      WHERE walk.seen < ${limit + 1}
    ),
    guided AS MATERIALIZED (
      SELECT * FROM (
        SELECT x.* FROM walk w CROSS JOIN LATERAL unnest(w.sheets) AS d (sheet_id)
        CROSS JOIN LATERAL (
          SELECT ${CONVERSION_COLUMNS}, c.id AS sort_id FROM conversions c
          WHERE c.sheet_id = d.sheet_id AND c.received_at >= w.day AND c.received_at < w.day + interval '1 day' AND ${and(where)}
          ORDER BY c.received_at ${direction}, c.id ${direction}
          LIMIT ${limit + 1}
        ) x
        UNION
        SELECT ${CONVERSION_COLUMNS}, c.id FROM conversions c
        WHERE c.stored_key >= ${watermark}::xid8 AND c.stored_key >= (SELECT w FROM st) AND ${and(where)}
        UNION
        SELECT ${CONVERSION_COLUMNS}, c.id FROM conversion_history h JOIN conversions c ON c.id = h.conversion_id
        WHERE h.change_key >= ${watermark}::xid8 AND h.change_key >= (SELECT w FROM st) AND ${and(where)}
      ) u
      ORDER BY u.received_at ${direction}, u.sort_id ${direction}
      LIMIT ${limit + 1}
    ),
    complete AS MATERIALIZED (
      SELECT NOT EXISTS (SELECT FROM walk WHERE seen >= ${limit + 1}) OR (SELECT count(*) FROM guided g WHERE ${onBoundSide}) >= ${limit + 1} AS yes
    )
    SELECT g.* FROM guided g WHERE (SELECT yes FROM complete)
    UNION ALL
    (SELECT p.* FROM (${scanned(Prisma.sql`scope`, page)}) p WHERE NOT (SELECT yes FROM complete))
    ORDER BY received_at ${direction}, sort_id ${direction}`
}

export async function getConversion(prisma: PrismaClient, scope: SheetScope, id: string): Promise<Conversion | null> {
  if (!isStorableId(id)) return null
  const where = [Prisma.sql`c.id = ${id}::bigint`]
  if (scope !== null) where.push(Prisma.sql`c.sheet_id = ANY(${[...scope]}::text[])`)
  const [row] = await prisma.$queryRaw<ConversionRow[]>(Prisma.sql`SELECT ${CONVERSION_COLUMNS} FROM conversions c WHERE ${and(where)}`)
  return row ? toConversion(row) : null
}

// The database's zone names, read once per client: it computes the day buckets, so its list is the
// authority, and reading pg_timezone_names costs 17 to 32 ms, too much for every summary request.
// Keyed by client, so each app (and each test's database) has its own, and it goes with the client.
const zoneLists = new WeakMap<PrismaClient, Promise<ReadonlySet<string>>>()

function zoneNames(prisma: PrismaClient): Promise<ReadonlySet<string>> {
  const cached = zoneLists.get(prisma)
  if (cached) return cached
  const names = prisma.$queryRaw<Array<{ name: string }>>`SELECT name FROM pg_timezone_names`.then(
    (rows): ReadonlySet<string> => new Set(rows.map((row) => row.name)),
  )
  zoneLists.set(prisma, names)
  // A failed read (the database down) is not kept: the next summary asks again.
  names.catch(() => {
    if (zoneLists.get(prisma) === names) zoneLists.delete(prisma)
  })
  return names
}

/**
 * An IANA zone name ("Europe/Berlin", "UTC") that the database knows: it computes the day buckets.
 * Abbreviations such as PST are refused: PostgreSQL reads them as fixed offsets, without summer time.
 */
async function isTimeZone(prisma: PrismaClient, name: string): Promise<boolean> {
  if (name === 'UTC') return true
  if (!name.includes('/')) return false
  return (await zoneNames(prisma)).has(name)
}

/**
 * Conversions and revenue per group (and day), split by status. Read from the pre-aggregates
 * (src/rollups.ts), exact; a filter they do not hold (`transaction_id`) scans the rows.
 */
export async function summarize(db: Database, scope: SheetScope, query: SummaryQuery): Promise<SummaryRow[]> {
  const { prisma } = db
  const tz = query.tz ?? 'UTC'
  if (!(await isTimeZone(prisma, tz))) throw new InputError('invalid_parameter', 'tz', `tz ${JSON.stringify(tz)} is not an IANA time zone`)
  if (query.transaction_id === undefined) {
    const range = {
      ...(query.from !== undefined && { from: parseTime('from', query.from) }),
      ...(query.to !== undefined && { to: parseTime('to', query.to) }),
    }
    return summarizeFromRollups(db, scope, query, range, tz)
  }
  return summarizeRows(prisma, scope, query, tz)
}

/** The summary computed from the matching rows. */
export async function summarizeRows(prisma: PrismaClient, scope: SheetScope, query: SummaryQuery, tz: string): Promise<SummaryRow[]> {
  const columns: Prisma.Sql[] = [
    ...(query.interval === 'day' ? [Prisma.sql`to_char(received_at AT TIME ZONE ${tz}, 'YYYY-MM-DD') AS day`] : []),
    // The base conversion is stored with event '' and shown as null.
    ...GROUP_COLUMNS[query.group_by].map((column) => Prisma.raw(column === 'event' ? `NULLIF(event, '') AS event` : column)),
    Prisma.sql`currency::text AS currency`,
  ]
  // Grouped and ordered by position: the day expression is written once.
  const keys = Prisma.raw(columns.map((_, index) => index + 1).join(', '))
  const rows = await prisma.$queryRaw<Array<Record<string, string | number | null>>>(Prisma.sql`
    SELECT ${Prisma.join(columns)}, ${Prisma.raw(statusColumns('status', '1', 'payout'))}
    FROM conversions ${whereClause(conditions(scope, query))}
    GROUP BY ${keys}
    ORDER BY ${keys}`)
  return rows as SummaryRow[]
}

/**
 * The deliveries that stored or moved a conversion, oldest first; null when the caller may not see
 * it. A conversion never moved has no history rows: its one entry is the row itself.
 */
export async function conversionHistory(prisma: PrismaClient, scope: SheetScope, id: string): Promise<HistoryEntry[] | null> {
  if (!isStorableId(id)) return null
  const where = [Prisma.sql`c.id = ${id}::bigint`]
  if (scope !== null) where.push(Prisma.sql`c.sheet_id = ANY(${[...scope]}::text[])`)
  const rows = await prisma.$queryRaw<Array<Omit<HistoryEntry, 'recorded_at'> & { recorded_at: Date }>>(Prisma.sql`
    SELECT COALESCE(h.status, c.status) AS status, CASE WHEN h.id IS NULL THEN c.network_status ELSE h.network_status END AS network_status,
      (CASE WHEN h.id IS NULL THEN c.payout ELSE h.payout END)::text AS payout, COALESCE(h.currency, c.currency)::text AS currency,
      COALESCE(h.recorded_at, c.received_at) AS recorded_at
    FROM conversions c
    LEFT JOIN conversion_history h ON h.conversion_id = c.id
    ${whereClause(where)}
    ORDER BY h.id`)
  if (rows.length === 0) return null
  return rows.map(({ recorded_at, ...row }) => ({ ...row, recorded_at: recorded_at.toISOString() }))
}
