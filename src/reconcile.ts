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
// A line refused for a bad value is reported and left out of the comparison, but the stored
// conversion it names is not reported missing from the export (the export has it, unreadable).
//
// The comparison is one statement, so one snapshot of the store: the differences, their counts and
// the totals agree even while the receiver writes.
//
// For a conversion missing here, the evidence is the sheet's rejection log (bounded,
// REJECTION_LOG_MAX_PER_SHEET): the rejected deliveries whose query carried its transaction_id, as a
// value of `transaction_id` (also one of several), or after a `transaction_id=` anywhere in the
// decoded query (an encoded '=', an '&amp;' or a second '?' that the receiver could not read).
import { randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Database, SqlSession } from './database.ts'
import { parseDelivery } from './delivery.ts'
import { InputError, NotFoundError } from './errors.ts'
import { ChunkWriter, readFileLines, type FileFormat } from './file-lines.ts'
import { parseFileTime } from './import.ts'
import { MalformedValue, parseQueryString } from './query-string.ts'
import { STATUSES, type ConversionStatus, type StatusMapping } from './lifecycle.ts'
import { reasonText } from './reconcile-output.ts'
import { revenueText } from './rollups.ts'
import { DIFFERENCE_KINDS, type Difference, type DifferenceKind, type ReconcileReport } from './schemas/reconcile.ts'

export const RECONCILE_COLUMNS = ['transaction_id', 'event', 'payout', 'currency', 'status', 'received_at', 'date'] as const

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
  /** On PostgreSQL, the session's statement timeout (default: none). */
  statementTimeoutMs?: number
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
  if (options.from && options.to && options.from >= options.to) throw new InputError('invalid_parameter', 'to', '`to` must be after `from`')
  return db.withSession(async (session) => {
    const [sheet] = await session.query<{ active: boolean; default_currency: string }>('SELECT active, default_currency FROM sheets WHERE sheet_id = $1', [options.sheetId])
    if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${options.sheetId} does not exist`, 'sheet_id')
    // Only on a connection of its own: PGlite's one connection is every session's.
    if (options.statementTimeoutMs && db.kind === 'postgresql') await session.exec(`SET statement_timeout = ${Math.floor(options.statementTimeoutMs)}`)
    // Unique names: on PGlite every session shares the one connection (and its temporary tables).
    const name = `reconcile_${randomBytes(6).toString('hex')}`
    const tables: Tables = { lines: `${name}_lines`, export: `${name}_export`, diff: `${name}_diff`, totals: `${name}_totals`, evidence: `${name}_evidence` }
    try {
      const staged = await stageExport(session, tables.lines, options)
      const window = windowOf(options, staged)
      const report = await compare(session, tables, options.sheetId, sheet.default_currency, window, staged)
      return await consume(report, readDifferences(session, tables, report.missing_here_evidence.log_since))
    } finally {
      await session.exec(Object.values(tables).map((table) => `DROP TABLE IF EXISTS ${table};`).join(' ')).catch(() => {})
    }
  })
}

/** The earliest and latest time of a column of the export. */
interface Range {
  first?: Date
  last?: Date
}

const widen = (range: Range, time: Date) => {
  if (!range.first || time < range.first) range.first = time
  if (!range.last || time > range.last) range.last = time
}

interface Staged {
  read: number
  rejected: number
  rejectedLines: ReconcileReport['rejected_lines']
  received_at: Range
  date: Range
}

async function stageExport(session: SqlSession, table: string, options: ReconcileOptions): Promise<Staged> {
  // `bad`: a line refused for a value; only its key is kept, so that the conversion it names is not
  // reported missing from the export.
  await session.exec(`CREATE TEMPORARY TABLE ${table} (line int, transaction_id text, event text, status text, network_status text, payout numeric, currency text, bad boolean)`)
  const staged: Staged = { read: 0, rejected: 0, rejectedLines: [], received_at: {}, date: {} }
  const { lines } = readFileLines(options.input, { format: options.format, columns: RECONCILE_COLUMNS, required: 'transaction_id' })
  // A staged line: line, transaction_id, event, status, network word, payout, currency, bad.
  type StagedLine = [number, string, string, string | null, string | null, string | null, string | null, boolean]
  const writer = new ChunkWriter<StagedLine>(CHUNK, async (rows) => {
    await session.query(
      `INSERT INTO ${table} SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[], $7::text[], $8::boolean[])`,
      Array.from({ length: 8 }, (_, column) => rows.map((row) => row[column])),
    )
  })
  try {
    for await (const { line, values, error } of lines) {
      staged.read++
      try {
        if (error) throw error
        const { received_at: receivedAt, date, ...fields } = values
        // The window's column: received_at when the export has one, else date. A bad line's time counts too.
        if (receivedAt !== undefined) widen(staged.received_at, parseFileTime('received_at', receivedAt))
        else if (date !== undefined) widen(staged.date, parseFileTime('date', date))
        const delivery = parseDelivery({ sheet_id: 'export', ...fields, ...options.mapping })
        const status = fields.status !== undefined ? delivery.status! : null
        const full = writer.push([line, delivery.transaction_id, delivery.event ?? '', status, delivery.network_status ?? null, delivery.payout ?? null, delivery.currency ?? null, false])
        if (full) await full
      } catch (failure) {
        if (!(failure instanceof InputError)) throw failure
        staged.rejected++
        if (staged.rejectedLines.length < REJECTED_LINES_SHOWN) {
          staged.rejectedLines.push({ line, error: failure.code, parameter: failure.parameter ?? null, message: failure.message })
        }
        options.onRejected?.(line, failure)
        // Its key, as written, when it has one.
        const id = values.transaction_id
        if (id !== undefined && failure.parameter !== 'transaction_id') {
          const full = writer.push([line, id, failure.parameter === 'event' ? '' : (values.event ?? ''), null, null, null, null, true])
          if (full) await full
        }
      }
    }
    await writer.done()
  } catch (error) {
    // The session's tables are dropped only after the insert under way has settled.
    await writer.settled()
    throw error
  }
  return staged
}

interface Window {
  from: Date | null
  to: Date | null
  source: ReconcileReport['window']['source']
}

const DAY_MS = 86_400_000

function windowOf(options: ReconcileOptions, staged: Staged): Window {
  // The export's range: of received_at when it has one, else of date (whole UTC days: the window
  // ends after the last one); a time ends it just after it.
  const column = staged.received_at.first ? 'received_at' : staged.date.first ? 'date' : undefined
  let from: Date | null = null
  let to: Date | null = null
  if (column === 'received_at') {
    from = staged.received_at.first!
    to = new Date(staged.received_at.last!.getTime() + 1)
  } else if (column === 'date') {
    from = new Date(Math.floor(staged.date.first!.getTime() / DAY_MS) * DAY_MS)
    to = new Date(Math.floor(staged.date.last!.getTime() / DAY_MS) * DAY_MS + DAY_MS)
  }
  if (options.from || options.to) {
    // A bound given wins; the other comes from the export, when it has a time column.
    from = options.from ?? (from && options.to && from < options.to ? from : null)
    to = options.to ?? (to && options.from && to > options.from ? to : null)
    return { from, to, source: 'parameters' }
  }
  return column ? { from, to, source: column } : { from: null, to: null, source: 'all_time' }
}

// A conversion that differs in several fields is reported once, under the first of them (a
// different status first; a payout in another currency is not comparable). `ord` orders the list:
// the kind's rank (DIFFERENCE_KINDS), then the export's line or, for missing_there, the time stored.
const RANK = 10_000_000_000_000
const rank = (kind: DifferenceKind) => DIFFERENCE_KINDS.indexOf(kind) * RANK

type Tables = Record<'lines' | 'export' | 'diff' | 'totals' | 'evidence', string>

async function compare(session: SqlSession, tables: Tables, sheetId: string, currency: string, window: Window, staged: Staged): Promise<ReconcileReport> {
  const inWindow = `($2::timestamptz IS NULL OR c.received_at >= $2) AND ($3::timestamptz IS NULL OR c.received_at < $3)`
  // Each key named by the export once: its last good line, else (all its lines refused) a bad one.
  await session.exec(`
    CREATE TEMPORARY TABLE ${tables.export} AS
      SELECT DISTINCT ON (transaction_id, event) * FROM ${tables.lines} ORDER BY transaction_id, event, bad, line DESC;
    ANALYZE ${tables.export};
    CREATE TEMPORARY TABLE ${tables.diff} (
      ord bigint, kind text, transaction_id text, event text, conversion_id bigint, status text, payout numeric, currency text,
      received_at timestamptz, line int, there_status text, there_network_status text, there_payout numeric, there_currency text, fields text[]);
    CREATE TEMPORARY TABLE ${tables.totals} (here boolean, status text, currency text, n bigint, revenue numeric)`)
  const differs = {
    status: 'j.status IS NOT NULL AND j.status <> j.here_status',
    currency: 'j.currency IS NOT NULL AND j.currency <> j.here_currency',
    payout: 'j.payout IS NOT NULL AND j.here_payout IS DISTINCT FROM j.payout',
  }
  const kindOf = (value: (kind: DifferenceKind) => string) => `CASE WHEN j.conversion_id IS NULL THEN ${value('missing_here')}
    WHEN ${differs.status} THEN ${value('status_differs')} WHEN ${differs.currency} THEN ${value('currency_differs')} ELSE ${value('payout_differs')} END`
  // One statement, so one snapshot: the export's lines joined with their stored conversions (a probe
  // of the key's index each, or a hash join, as the planner finds cheaper); the stored conversions of
  // the window joined with the export's keys (which also finds those missing there); the
  // differences and both sides' totals written from them.
  await session.query(
    `WITH joined AS MATERIALIZED (
       SELECT e.*, c.id AS conversion_id, c.status AS here_status, c.payout AS here_payout, c.currency::text AS here_currency, c.received_at,
         c.id IS NOT NULL AND ${inWindow} AS in_window
       FROM ${tables.export} e
       LEFT JOIN conversions c ON c.sheet_id = $1 AND c.transaction_id = e.transaction_id AND c.event = e.event
       WHERE NOT e.bad
     ), stored AS MATERIALIZED (
       SELECT c.id, c.transaction_id, c.event, c.status, c.payout, c.currency::text AS currency, c.received_at, e.line IS NOT NULL AS named
       FROM conversions c
       -- One row per key in the export: a join, not a lookup per stored row.
       LEFT JOIN ${tables.export} e ON e.transaction_id = c.transaction_id AND e.event = c.event
       WHERE c.sheet_id = $1 AND ${inWindow}
     ), differing AS (
       INSERT INTO ${tables.diff}
       SELECT d.rank + row_number() OVER (PARTITION BY d.rank ORDER BY d.line), d.kind, d.transaction_id, d.event, d.conversion_id, d.here_status,
         d.here_payout, d.here_currency, d.received_at, d.line, d.status, d.network_status, d.payout, COALESCE(d.currency, $4), d.fields
       FROM (
         SELECT j.*, ${kindOf((kind) => `${rank(kind)}::bigint`)} AS rank, ${kindOf((kind) => `'${kind}'`)} AS kind,
           CASE WHEN j.conversion_id IS NULL THEN '{}'::text[]
                ELSE array_remove(ARRAY[CASE WHEN ${differs.status} THEN 'status' END, CASE WHEN ${differs.currency} THEN 'currency' END,
                                        CASE WHEN ${differs.payout} THEN 'payout' END], NULL) END AS fields
         FROM joined j
         WHERE j.conversion_id IS NULL OR (${differs.status}) OR (${differs.currency}) OR (${differs.payout})
       ) d
     ), missing AS (
       INSERT INTO ${tables.diff} (ord, kind, transaction_id, event, conversion_id, status, payout, currency, received_at, fields)
       SELECT ${rank('missing_there')} + row_number() OVER (ORDER BY received_at, id), 'missing_there',
         transaction_id, event, id, status, payout, currency, received_at, '{}'::text[]
       FROM stored WHERE NOT named
     ), here AS (
       -- The stored side: the window's conversions, and those outside it that the export names.
       INSERT INTO ${tables.totals}
       SELECT true, status, currency, count(*), sum(payout) FROM stored GROUP BY status, currency
       UNION ALL
       SELECT true, here_status, here_currency, count(*), sum(here_payout) FROM joined WHERE conversion_id IS NOT NULL AND NOT in_window GROUP BY 2, 3
     )
     INSERT INTO ${tables.totals}
     SELECT false, COALESCE(status, 'approved'), COALESCE(currency, $4), count(*), sum(payout) FROM ${tables.export} WHERE NOT bad GROUP BY 2, 3`,
    [sheetId, window.from?.toISOString() ?? null, window.to?.toISOString() ?? null, currency],
  )
  const totals = await session.query<ReconcileReport['totals'][number]>(
    `SELECT status, currency,
       COALESCE(sum(n) FILTER (WHERE here), 0)::int AS here_conversions, ${revenueText('COALESCE(sum(revenue) FILTER (WHERE here), 0)')} AS here_revenue,
       COALESCE(sum(n) FILTER (WHERE NOT here), 0)::int AS there_conversions, ${revenueText('COALESCE(sum(revenue) FILTER (WHERE NOT here), 0)')} AS there_revenue
     FROM ${tables.totals} GROUP BY status, currency
     ORDER BY array_position(ARRAY[${STATUSES.map((status) => `'${status}'`).join(', ')}], status), currency`,
  )
  await session.exec(`CREATE UNIQUE INDEX ON ${tables.diff} (ord)`)

  const kinds = await session.query<{ kind: DifferenceKind; n: number }>(`SELECT kind, count(*)::int AS n FROM ${tables.diff} GROUP BY kind`)
  const [counts] = await session.query<{ lines: number; keys: number }>(
    `SELECT (SELECT count(*) FROM ${tables.lines} WHERE NOT bad)::int AS lines, (SELECT count(*) FROM ${tables.export} WHERE NOT bad)::int AS keys`,
  )
  const logSince = await stageEvidence(session, tables.evidence, sheetId)
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
    missing_here_evidence: { no_delivery_received: unseen?.n ?? 0, rejected: evidence, log_since: logSince },
  }
}

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

// `transaction_id=` in a decoded part of the query (between two of its raw '&'), after the part's
// start or a separator, and its value up to the next one: a '&' there was encoded, part of the value.
const TRANSACTION_ID = /(?:^|[?;\s])transaction_id=([^?;#\s]+)/gi

/** The transaction ids a rejected delivery's query carried (see the top of this file). */
export function idsInQuery(rawQuery: string): Set<string> {
  const ids = new Set<string>()
  // The values as the receiver reads them (each of several), whole; one it could not decode, as far as it decodes.
  const read = parseQueryString(rawQuery).transaction_id
  for (const value of Array.isArray(read) ? read : read === undefined ? [] : [read]) {
    const text = (value instanceof MalformedValue ? decode(value.raw) : value).trim()
    if (text) ids.add(text)
  }
  // And where the receiver could not read it: an encoded '=', '&amp;', a second '?'. Each part decoded
  // on its own, so that `transaction_id=a%26b` names a&b (as the receiver reads it), not also a.
  for (const part of rawQuery.split('&')) {
    for (const match of decode(part).matchAll(TRANSACTION_ID)) ids.add(match[1]!)
  }
  return ids
}

/** Stages the tokens of the sheet's rejection log; returns the time of its oldest entry (null when empty). */
async function stageEvidence(session: SqlSession, table: string, sheetId: string): Promise<string | null> {
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
  const oldest = log.reduce<Date | null>((min, entry) => (min === null || new Date(entry.received_at) < min ? new Date(entry.received_at) : min), null)
  return oldest?.toISOString() ?? null
}

async function * readDifferences(session: SqlSession, tables: Record<'diff' | 'evidence', string>, logSince: string | null): AsyncGenerator<Difference> {
  for (let after = '-1'; ;) {
    const rows = await session.query<DifferenceRow>(
      `SELECT d.ord::text AS ord, d.kind, d.transaction_id, d.event, d.conversion_id::text AS conversion_id, d.status, d.payout::text AS payout,
         d.currency::text AS currency, d.received_at, d.line, d.there_status, d.there_network_status, d.there_payout::text AS there_payout,
         d.there_currency, d.fields,
         (SELECT json_agg(json_build_object('rejection_id', r.rejection_id::text, 'reason', r.reason, 'parameter', r.parameter, 'received_at', r.received_at) ORDER BY r.received_at, r.rejection_id)
          FROM ${tables.evidence} r WHERE d.kind = 'missing_here' AND r.token = d.transaction_id) AS evidence
       FROM ${tables.diff} d WHERE d.ord > $1::bigint ORDER BY d.ord LIMIT ${PAGE}`,
      [after],
    )
    for (const row of rows) yield toDifference(row, logSince)
    if (rows.length < PAGE) return
    after = rows.at(-1)!.ord
  }
}

interface DifferenceRow {
  ord: string
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

function toDifference(row: DifferenceRow, logSince: string | null): Difference {
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
    explanation: explain(row.kind, evidence, logSince),
  }
}

function explain(kind: DifferenceKind, evidence: Difference['evidence'], logSince: string | null): string {
  switch (kind) {
    case 'missing_here':
      if (!evidence || evidence.length === 0) {
        const log = logSince ? `the rejection log, kept since ${logSince}, has none` : 'the rejection log is empty'
        return `no delivery received: none was stored and ${log}; most likely the network never sent it to this sheet`
      }
      return `its deliveries were rejected: ${[...new Set(evidence.map((entry) => reasonText(entry.reason, entry.parameter)))].join(', ')}; see evidence`
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
