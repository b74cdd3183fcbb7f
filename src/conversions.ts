// Reading stored conversions back: the filtered, keyset-paginated list, one conversion, and the
// summary (conversions + revenue per campaign / ad set / ad, per currency, optionally per day).
// Raw SQL: payouts are read as text so that decimals stay exact (`12.50` stays `12.50`).
import type { Database } from './database.ts'
import { InputError } from './errors.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { GROUP_COLUMNS, statusColumns, summarizeFromRollups } from './rollups.ts'
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

/** Parses an ISO 8601 filter value (its pattern is checked by the route schema). */
export function parseTime(name: string, value: string): Date {
  const date = new Date(value.length === 10 ? `${value}T00:00:00Z` : value)
  // A day that does not exist (2024-02-30) must not roll over into the next month.
  const [year = 0, month = 0, day = 0] = value.slice(0, 10).split('-').map(Number)
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  if (!isStorableTime(date) || month < 1 || month > 12 || day < 1 || day > daysInMonth) {
    throw new InputError('invalid_parameter', name, `${name} ${JSON.stringify(value)} is not a valid ISO 8601 time`)
  }
  return date
}

/** The WHERE conditions of the list and summary filters, within the caller's sheets. */
function conditions(scope: SheetScope, query: Omit<ConversionQuery, 'limit' | 'cursor' | 'order'>): Prisma.Sql[] {
  const where: Prisma.Sql[] = []
  if (query.sheet_id !== undefined) where.push(Prisma.sql`sheet_id = ${query.sheet_id}`)
  if (scope !== null) where.push(Prisma.sql`sheet_id = ANY(${[...scope]}::text[])`)
  if (query.from !== undefined) where.push(Prisma.sql`received_at >= ${parseTime('from', query.from)}`)
  if (query.to !== undefined) where.push(Prisma.sql`received_at < ${parseTime('to', query.to)}`)
  for (const name of ['campaign_id', 'adset_id', 'ad_id', 'transaction_id'] as const) {
    const value = query[name]
    if (value !== undefined) where.push(Prisma.sql`${Prisma.raw(name)} = ${value}`)
  }
  if (query.currency !== undefined) where.push(Prisma.sql`currency = ${query.currency.toUpperCase()}`)
  if (query.status !== undefined) where.push(Prisma.sql`status = ${query.status}`)
  // The base conversion is stored with event '': `event=` selects it.
  if (query.event !== undefined) where.push(Prisma.sql`event = ${query.event}`)
  return where
}

const whereClause = (where: Prisma.Sql[]) => (where.length ? Prisma.sql`WHERE ${Prisma.join(where, ' AND ')}` : Prisma.empty)

// Output columns are renamed (id_text): ORDER BY resolves a bare name to an output column first, and
// ordering by the text of an id ("9" > "10") would break the keyset order.
const CONVERSION_COLUMNS = Prisma.sql`id::text AS id_text, sheet_id, transaction_id, payout::text AS payout_text,
  currency::text AS currency_text, campaign_id, adset_id, ad_id, NULLIF(event, '') AS event, status, network_status,
  received_at, updated_at`
const SELECT_CONVERSION = Prisma.sql`SELECT ${CONVERSION_COLUMNS} FROM conversions`

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
  const where = conditions(scope, query)
  if (query.cursor !== undefined) {
    const after = decodeCursor(query.cursor, order)
    // Keyset: strictly past the last row seen, so a row is never read twice, and rows stored while
    // paging can not shift the rows that were there before.
    where.push(
      order === 'desc'
        ? Prisma.sql`(received_at, id) < (${after.at}, ${after.id}::bigint)`
        : Prisma.sql`(received_at, id) > (${after.at}, ${after.id}::bigint)`,
    )
  }
  const direction = Prisma.raw(order === 'desc' ? 'DESC' : 'ASC')
  if (query.sheet_id !== undefined) {
    const rows = await prisma.$queryRaw<ConversionRow[]>(Prisma.sql`
      ${SELECT_CONVERSION} ${whereClause(where)}
      ORDER BY received_at ${direction}, id ${direction}
      LIMIT ${limit + 1}`)
    return keysetPage(rows, limit, order, toConversion)
  }
  // Several sheets (a multi-sheet or global key without sheet_id): each sheet's first rows from its
  // index (sheet_id, received_at, id), then merged, so that a page costs the same whatever the table
  // holds; one ORDER BY over every sheet's rows would read and sort them all.
  const sheets = scope === null ? Prisma.sql`SELECT sheet_id FROM sheets` : Prisma.sql`SELECT unnest(${[...scope]}::text[]) AS sheet_id`
  const rows = await prisma.$queryRaw<ConversionRow[]>(Prisma.sql`
    SELECT c.* FROM (${sheets}) s
    CROSS JOIN LATERAL (
      SELECT ${CONVERSION_COLUMNS}, id AS sort_id FROM conversions ${whereClause([Prisma.sql`sheet_id = s.sheet_id`, ...where])}
      ORDER BY received_at ${direction}, id ${direction}
      LIMIT ${limit + 1}
    ) c
    ORDER BY c.received_at ${direction}, c.sort_id ${direction}
    LIMIT ${limit + 1}`)
  return keysetPage(
    rows.map(({ sort_id: _, ...row }: ConversionRow & { sort_id?: unknown }) => row),
    limit,
    order,
    toConversion,
  )
}

export async function getConversion(prisma: PrismaClient, scope: SheetScope, id: string): Promise<Conversion | null> {
  if (!isStorableId(id)) return null
  const where = [Prisma.sql`id = ${id}::bigint`]
  if (scope !== null) where.push(Prisma.sql`sheet_id = ANY(${[...scope]}::text[])`)
  const [row] = await prisma.$queryRaw<ConversionRow[]>(Prisma.sql`${SELECT_CONVERSION} ${whereClause(where)}`)
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
