// Reconciliation of a sheet against a network's export: which conversions differ, and why.
//
// The export (CSV with a header, or JSON lines) is read with the import's reader and the receiver's
// value rules, and staged in a temporary table; the comparison is set-based (a join with the stored
// conversions by their key, an anti-join for the stored ones the export lacks), so an export of a
// million lines against a sheet of 10^7 conversions is a few statements, and memory does not grow
// with either side. The differences are kept in a temporary table and read back in pages.
//
// The key is the receiver's: (transaction_id, event), a line without `event` the base conversion. A
// key on several lines counts once, as its last line says (an export listing a conversion's moves
// ends with its final state). A value a line does not carry is not compared; in the totals it counts
// as the receiver would store it (status approved, the sheet's currency, no payout).
//
// The window: `from`/`to` when given, else the range of the export's `received_at` (or `date`, whole
// days in UTC) column, else all time. The stored side is the conversions received in the window plus
// those outside it that the export names (a conversion the network dates differently is compared,
// not reported missing on both sides).
//
// For a conversion missing here, the evidence is the sheet's rejection log (bounded,
// REJECTION_LOG_MAX_PER_SHEET): the rejected deliveries whose query carried its transaction_id, as a
// value of `transaction_id` (also a repeated one) or, in a query the receiver could not read as
// parameters (a segment with an unknown name or without `=`), anywhere in that segment.
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Database, SqlSession } from './database.ts'
import { parseDelivery } from './delivery.ts'
import { InputError, NotFoundError } from './errors.ts'
import { readFileLines, type FileFormat } from './file-lines.ts'
import { parseFileTime } from './import.ts'
import { STATUSES, type ConversionStatus, type StatusMapping } from './lifecycle.ts'
import { revenueText } from './rollups.ts'
import { DeliveryQuery } from './schemas/receiver.ts'
import { DIFFERENCE_KINDS, type Difference, type DifferenceKind, type ReconcileReport } from './schemas/reconcile.ts'

export const RECONCILE_COLUMNS = ['transaction_id', 'event', 'payout', 'currency', 'status', 'received_at', 'date'] as const
type Column = (typeof RECONCILE_COLUMNS)[number]

/** Bad lines listed in the report (all of them are counted, and each is passed to onRejected). */
const REJECTED_LINES_SHOWN = 100
const CHUNK = 5000
const PAGE = 2000

export interface ReconcileOptions {
  sheetId: string
  input: Readable
  format?: FileFormat
  from?: Date
  to?: Date
  /** The network's own status words, as on the receiver's URL. */
  mapping?: StatusMapping
  onRejected?: (line: number, error: InputError) => void
}

/**
 * Reconciles the sheet with the export, then hands the report and the differences (read in pages)
 * to `consume`; the staged tables live until it resolves.
 */
export async function reconcile<T>(
  db: Database,
  options: ReconcileOptions,
  consume: (report: ReconcileReport, differences: AsyncIterable<Difference>) => Promise<T>,
): Promise<T> {
  return db.withSession(async (session) => {
    const [sheet] = await session.query<{ active: boolean; default_currency: string }>('SELECT active, default_currency FROM sheets WHERE sheet_id = $1', [options.sheetId])
    if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${options.sheetId} does not exist`, 'sheet_id')
    // Unique names: on PGlite every session shares the one connection (and its temporary tables).
    const name = `reconcile_${randomBytes(6).toString('hex')}`
    const tables = { lines: `${name}_lines`, export: `${name}_export`, diff: `${name}_diff`, evidence: `${name}_evidence` }
    try {
      const staged = await stageExport(session, tables.lines, options)
      const window = windowOf(options, staged)
      const report = await compare(session, tables, options.sheetId, sheet.default_currency, window, staged)
      return await consume(report, readDifferences(session, tables))
    } finally {
      await session.exec(Object.values(tables).map((table) => `DROP TABLE IF EXISTS ${table};`).join(' ')).catch(() => {})
    }
  })
}

interface Staged {
  read: number
  rejected: number
  rejectedLines: ReconcileReport['rejected_lines']
  /** The range of the export's time column, when it has one. */
  first?: Date
  last?: Date
  timeColumn?: 'received_at' | 'date'
}

async function stageExport(session: SqlSession, table: string, options: ReconcileOptions): Promise<Staged> {
  await session.exec(`CREATE TEMPORARY TABLE ${table} (line int, transaction_id text, event text, status text, network_status text, payout numeric, currency text)`)
  const staged: Staged = { read: 0, rejected: 0, rejectedLines: [] }
  const { lines } = readFileLines(options.input, { format: options.format, columns: RECONCILE_COLUMNS, required: 'transaction_id' })
  let chunk: Array<{ line: number; values: Partial<Record<Column, string>>; statusGiven: boolean; delivery: ReturnType<typeof parseDelivery> }> = []
  const flush = async () => {
    if (chunk.length === 0) return
    const rows = chunk
    chunk = []
    await session.query(
      `INSERT INTO ${table} SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[], $7::text[])`,
      [
        rows.map((row) => row.line),
        rows.map((row) => row.delivery.transaction_id),
        rows.map((row) => row.delivery.event ?? ''),
        rows.map((row) => (row.statusGiven ? row.delivery.status : null)),
        rows.map((row) => row.delivery.network_status ?? null),
        rows.map((row) => row.delivery.payout ?? null),
        rows.map((row) => row.delivery.currency ?? null),
      ],
    )
  }
  for await (const { line, values, error } of lines) {
    staged.read++
    try {
      if (error) throw error
      const { received_at: receivedAt, date, ...fields } = values
      const delivery = parseDelivery({ sheet_id: 'export', ...fields, ...options.mapping })
      // The window's column: received_at when the export has one, else date.
      const time = receivedAt !== undefined ? parseFileTime('received_at', receivedAt) : date !== undefined ? parseFileTime('date', date) : undefined
      if (time) {
        const column = receivedAt !== undefined ? 'received_at' : 'date'
        if (staged.timeColumn === 'date' && column === 'received_at') staged.first = staged.last = undefined
        if (!(staged.timeColumn === 'received_at' && column === 'date')) {
          staged.timeColumn = column
          if (!staged.first || time < staged.first) staged.first = time
          if (!staged.last || time > staged.last) staged.last = time
        }
      }
      chunk.push({ line, values, statusGiven: fields.status !== undefined, delivery })
      if (chunk.length >= CHUNK) await flush()
    } catch (failure) {
      if (!(failure instanceof InputError)) throw failure
      staged.rejected++
      if (staged.rejectedLines.length < REJECTED_LINES_SHOWN) {
        staged.rejectedLines.push({ line, error: failure.code, parameter: failure.parameter ?? null, message: failure.message })
      }
      options.onRejected?.(line, failure)
    }
  }
  await flush()
  return staged
}

interface Window {
  from: Date | null
  to: Date | null
  source: ReconcileReport['window']['source']
}

const DAY_MS = 86_400_000

function windowOf(options: ReconcileOptions, staged: Staged): Window {
  if (options.from || options.to) return { from: options.from ?? null, to: options.to ?? null, source: 'parameters' }
  if (staged.timeColumn && staged.first && staged.last) {
    // A date is a whole day: the window ends after the last one. A time ends it just after it.
    const end = staged.timeColumn === 'date' ? Math.floor(staged.last.getTime() / DAY_MS) * DAY_MS + DAY_MS : staged.last.getTime() + 1
    const start = staged.timeColumn === 'date' ? Math.floor(staged.first.getTime() / DAY_MS) * DAY_MS : staged.first.getTime()
    return { from: new Date(start), to: new Date(end), source: staged.timeColumn }
  }
  return { from: null, to: null, source: 'all_time' }
}

// The kinds in report order; a conversion that differs in several fields is reported once, under
// the first of them (a different status first; a payout in another currency is not comparable).
const KIND_ORDER = `CASE kind ${DIFFERENCE_KINDS.map((kind, index) => `WHEN '${kind}' THEN ${index}`).join(' ')} END`

async function compare(
  session: SqlSession,
  tables: Record<'lines' | 'export' | 'diff' | 'evidence', string>,
  sheetId: string,
  currency: string,
  window: Window,
  staged: Staged,
): Promise<ReconcileReport> {
  const inWindow = `($2::timestamptz IS NULL OR c.received_at >= $2) AND ($3::timestamptz IS NULL OR c.received_at < $3)`
  const params = [sheetId, window.from?.toISOString() ?? null, window.to?.toISOString() ?? null]
  // The last line of each key.
  await session.exec(`
    CREATE TEMPORARY TABLE ${tables.export} AS
      SELECT DISTINCT ON (transaction_id, event) * FROM ${tables.lines} ORDER BY transaction_id, event, line DESC;
    ANALYZE ${tables.export}`)
  const differs = {
    status: 'e.status IS NOT NULL AND e.status <> c.status',
    currency: 'e.currency IS NOT NULL AND e.currency <> c.currency',
    payout: 'e.payout IS NOT NULL AND c.payout IS DISTINCT FROM e.payout',
  }
  await session.query(
    `CREATE TEMPORARY TABLE ${tables.diff} AS
     SELECT row_number() OVER (ORDER BY ${KIND_ORDER}, line, received_at, transaction_id, event) AS ord, d.* FROM (
       SELECT CASE WHEN c.id IS NULL THEN 'missing_here'
                   WHEN ${differs.status} THEN 'status_differs'
                   WHEN ${differs.currency} THEN 'currency_differs'
                   ELSE 'payout_differs' END AS kind,
         e.transaction_id, e.event, c.id AS conversion_id, c.status, c.payout, c.currency, c.received_at,
         e.line, e.status AS there_status, e.network_status AS there_network_status, e.payout AS there_payout,
         COALESCE(e.currency, $4) AS there_currency,
         CASE WHEN c.id IS NULL THEN '{}'::text[]
              ELSE array_remove(ARRAY[CASE WHEN ${differs.status} THEN 'status' END, CASE WHEN ${differs.currency} THEN 'currency' END,
                                      CASE WHEN ${differs.payout} THEN 'payout' END], NULL) END AS fields
       FROM ${tables.export} e
       LEFT JOIN conversions c ON c.sheet_id = $1 AND c.transaction_id = e.transaction_id AND c.event = e.event
       WHERE c.id IS NULL OR (${differs.status}) OR (${differs.currency}) OR (${differs.payout})
       UNION ALL
       SELECT 'missing_there', c.transaction_id, c.event, c.id, c.status, c.payout, c.currency, c.received_at,
         NULL, NULL, NULL, NULL, NULL, NULL
       FROM conversions c
       WHERE c.sheet_id = $1 AND ${inWindow}
         AND NOT EXISTS (SELECT FROM ${tables.export} e WHERE e.transaction_id = c.transaction_id AND e.event = c.event)
     ) d`,
    [...params, currency],
  )
  await session.exec(`CREATE UNIQUE INDEX ON ${tables.diff} (ord)`)

  const kinds = await session.query<{ kind: DifferenceKind; n: number }>(`SELECT kind, count(*)::int AS n FROM ${tables.diff} GROUP BY kind`)
  const [counts] = await session.query<{ lines: number; keys: number }>(`SELECT (SELECT count(*) FROM ${tables.lines})::int AS lines, (SELECT count(*) FROM ${tables.export})::int AS keys`)
  const totals = await session.query<ReconcileReport['totals'][number]>(
    `WITH here AS (
       SELECT c.status, c.currency::text AS currency, c.payout FROM conversions c WHERE c.sheet_id = $1 AND ${inWindow}
       UNION ALL
       SELECT c.status, c.currency::text, c.payout
       FROM ${tables.export} e JOIN conversions c ON c.sheet_id = $1 AND c.transaction_id = e.transaction_id AND c.event = e.event
       WHERE NOT (${inWindow})
     ), there AS (
       SELECT COALESCE(status, 'approved') AS status, COALESCE(currency, $4) AS currency, payout FROM ${tables.export}
     ), sides AS (
       SELECT status, currency, 1 AS here, 0 AS there, payout AS here_payout, NULL::numeric AS there_payout FROM here
       UNION ALL
       SELECT status, currency, 0, 1, NULL, payout FROM there
     )
     SELECT status, currency, sum(here)::int AS here_conversions, ${revenueText('COALESCE(sum(here_payout), 0)')} AS here_revenue,
       sum(there)::int AS there_conversions, ${revenueText('COALESCE(sum(there_payout), 0)')} AS there_revenue
     FROM sides GROUP BY status, currency
     ORDER BY array_position(ARRAY[${STATUSES.map((status) => `'${status}'`).join(', ')}], status), currency`,
    [...params, currency],
  )

  await stageEvidence(session, tables.evidence, sheetId)
  const evidence = await session.query<{ reason: string; parameter: string | null; conversions: number }>(
    `SELECT r.reason, r.parameter, count(DISTINCT d.ord)::int AS conversions
     FROM ${tables.diff} d JOIN ${tables.evidence} r ON r.token = d.transaction_id
     WHERE d.kind = 'missing_here' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`,
  )
  const [unseen] = await session.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${tables.diff} d
     WHERE d.kind = 'missing_here' AND NOT EXISTS (SELECT FROM ${tables.evidence} r WHERE r.token = d.transaction_id)`,
  )
  const counted = Object.fromEntries(DIFFERENCE_KINDS.map((kind) => [kind, kinds.find((row) => row.kind === kind)?.n ?? 0])) as Record<DifferenceKind, number>
  return {
    sheet_id: sheetId,
    window: { from: window.from?.toISOString() ?? null, to: window.to?.toISOString() ?? null, source: window.source },
    lines: { read: staged.read, rejected: staged.rejected, repeated: (counts?.lines ?? 0) - (counts?.keys ?? 0) },
    rejected_lines: staged.rejectedLines,
    totals,
    counts: counted,
    missing_here_evidence: { no_delivery_received: unseen?.n ?? 0, rejected: evidence },
  }
}

// Parameters the receiver reads: a segment with another name is one it could not read as a parameter.
const RECEIVER_PARAMETERS = new Set(Object.keys(DeliveryQuery.properties))
const TOKEN_SEPARATORS = /[\s&?;=#,]+/

/** Percent-decoding that keeps what it cannot decode (a malformed query is evidence too). */
function decode(text: string): string {
  const plus = text.replace(/\+/g, ' ')
  try {
    return decodeURIComponent(plus)
  } catch {
    return plus.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => {
      try {
        return decodeURIComponent(run)
      } catch {
        return run
      }
    })
  }
}

/** The transaction ids a rejected delivery's query may have carried (see the top of this file). */
export function idsInQuery(rawQuery: string): Set<string> {
  const ids = new Set<string>()
  const addTokens = (text: string) => {
    for (const token of text.split(TOKEN_SEPARATORS)) if (token) ids.add(token)
  }
  for (const segment of rawQuery.split('&')) {
    if (segment === '') continue
    const equals = segment.indexOf('=')
    const name = decode(equals < 0 ? segment : segment.slice(0, equals)).trim().toLowerCase()
    if (equals >= 0 && name === 'transaction_id') {
      const value = decode(segment.slice(equals + 1))
      if (value.trim()) ids.add(value.trim())
      addTokens(value)
    } else if (equals < 0 || !RECEIVER_PARAMETERS.has(name)) {
      addTokens(decode(segment))
    }
  }
  return ids
}

async function stageEvidence(session: SqlSession, table: string, sheetId: string): Promise<void> {
  await session.exec(`CREATE TEMPORARY TABLE ${table} (token text, rejection_id bigint, reason text, parameter text, received_at timestamptz)`)
  const log = await session.query<{ id: string; reason: string; parameter: string | null; raw_query: string; received_at: Date }>(
    'SELECT id::text AS id, reason, parameter, raw_query, received_at FROM delivery_rejections WHERE sheet_id = $1 AND NOT test',
    [sheetId],
  )
  const rows = log.flatMap((entry) => [...idsInQuery(entry.raw_query)].map((token) => ({ token, entry })))
  for (let start = 0; start < rows.length; start += CHUNK) {
    const part = rows.slice(start, start + CHUNK)
    await session.query(`INSERT INTO ${table} SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])`, [
      part.map((row) => row.token),
      part.map((row) => row.entry.id),
      part.map((row) => row.entry.reason),
      part.map((row) => row.entry.parameter),
      part.map((row) => new Date(row.entry.received_at).toISOString()),
    ])
  }
  await session.exec(`CREATE INDEX ON ${table} (token)`)
}

async function * readDifferences(session: SqlSession, tables: Record<'diff' | 'evidence', string>): AsyncGenerator<Difference> {
  for (let after = 0; ;) {
    const rows = await session.query<DifferenceRow>(
      `SELECT d.ord::int AS ord, d.kind, d.transaction_id, d.event, d.conversion_id::text AS conversion_id, d.status, d.payout::text AS payout,
         d.currency::text AS currency, d.received_at, d.line, d.there_status, d.there_network_status, d.there_payout::text AS there_payout,
         d.there_currency, d.fields,
         (SELECT json_agg(json_build_object('rejection_id', r.rejection_id::text, 'reason', r.reason, 'parameter', r.parameter, 'received_at', r.received_at) ORDER BY r.received_at, r.rejection_id)
          FROM ${tables.evidence} r WHERE d.kind = 'missing_here' AND r.token = d.transaction_id) AS evidence
       FROM ${tables.diff} d WHERE d.ord > $1 ORDER BY d.ord LIMIT ${PAGE}`,
      [after],
    )
    for (const row of rows) yield toDifference(row)
    if (rows.length < PAGE) return
    after = rows.at(-1)!.ord
  }
}

interface DifferenceRow {
  ord: number
  kind: DifferenceKind
  transaction_id: string
  event: string
  conversion_id: string | null
  status: ConversionStatus | null
  payout: string | null
  currency: string | null
  received_at: Date | string | null
  line: number | null
  there_status: ConversionStatus | null
  there_network_status: string | null
  there_payout: string | null
  there_currency: string | null
  fields: string[] | string | null
  evidence: Array<{ rejection_id: string; reason: string; parameter: string | null; received_at: string }> | string | null
}

const json = <T>(value: T | string | null): T | null => (typeof value === 'string' ? (JSON.parse(value) as T) : value)
const pgArray = (value: string[] | string | null): string[] => (Array.isArray(value) ? value : value ? value.replace(/^\{|\}$/g, '').split(',').filter(Boolean) : [])
const iso = (value: Date | string | null) => (value === null ? null : new Date(value).toISOString())

function toDifference(row: DifferenceRow): Difference {
  const evidence = row.kind === 'missing_here' ? (json(row.evidence) ?? []).map((entry) => ({ ...entry, received_at: iso(entry.received_at)! })) : null
  return {
    kind: row.kind,
    transaction_id: row.transaction_id,
    event: row.event === '' ? null : row.event,
    fields: pgArray(row.fields) as Difference['fields'],
    here:
      row.conversion_id === null
        ? null
        : { conversion_id: row.conversion_id, status: row.status!, payout: row.payout, currency: row.currency!, received_at: iso(row.received_at)! },
    there:
      row.kind === 'missing_there'
        ? null
        : { line: row.line!, status: row.there_status, network_status: row.there_network_status, payout: row.there_payout, currency: row.there_currency! },
    evidence,
    explanation: explain(row.kind, evidence),
  }
}

function explain(kind: DifferenceKind, evidence: Difference['evidence']): string {
  switch (kind) {
    case 'missing_here':
      if (!evidence || evidence.length === 0) return 'no delivery received: the network never sent this conversion to the receiver (or sent it to another sheet)'
      return `its deliveries were rejected: ${[...new Set(evidence.map((entry) => `${entry.reason}${entry.parameter ? ` (${entry.parameter})` : ''}`))].join(', ')}; see evidence`
    case 'missing_there':
      return 'stored here, not in the export'
    case 'status_differs':
      return 'the status differs'
    case 'currency_differs':
      return 'the currency differs'
    case 'payout_differs':
      return 'the payout differs'
  }
}
