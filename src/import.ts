// Bulk import of conversions from a CSV file (postback-admin import), for moving history over from
// another tracker. Every value passes the receiver's rules (src/delivery.ts); a bad line is reported
// with its line number and skipped. Lines are written in chunks, each in a transaction of its own (a
// long transaction would hold the change feed back, src/changes.ts), by two set-based statements:
// an insert of the new keys, then the lifecycle moves of the keys already stored. Running a file twice
// changes nothing the second time. The file is streamed: memory does not grow with its size.
import type { Readable } from 'node:stream'
import { keyOf } from './conversion-batch.ts'
import { parseTime } from './conversions.ts'
import type { Database, SqlSession } from './database.ts'
import { parseDelivery } from './delivery.ts'
import { InputError, NotFoundError } from './errors.ts'
import { ChunkWriter, readFileLines } from './file-lines.ts'
import { allowedMoveSql } from './lifecycle.ts'
import type { Delivery } from './schemas/receiver.ts'

/** The columns an import reads, by header name; others are ignored (and listed in the result). */
export const IMPORT_COLUMNS = ['transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id', 'status', 'event', 'received_at'] as const
type Column = (typeof IMPORT_COLUMNS)[number]

export interface ImportCounts {
  /** Data lines read (the header not counted). */
  lines: number
  imported: number
  updated: number
  duplicate: number
  rejected: number
}

export interface ImportResult extends ImportCounts {
  sheet_id: string
  ignored_columns: string[]
}

export interface ImportOptions {
  sheetId: string
  input: Readable
  /** A line skipped: its number in the file (1 is the header) and why. */
  onRejected: (line: number, error: InputError) => void
  /** After each chunk is committed. */
  onProgress?: (counts: ImportCounts) => void
  /** Lines per transaction. */
  chunkSize?: number
}

interface Row {
  delivery: Delivery
  receivedAt: Date | null
}

// ISO 8601: a date (midnight UTC), or a date and time with `T` or a space, with an offset or without
// one (UTC), as tracker exports write them.
const TIME = /^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$/

/** A time column of a file (`received_at`, `date`): a date alone is midnight UTC. */
export function parseFileTime(column: string, value: string): Date {
  if (!TIME.test(value)) throw new InputError('invalid_parameter', column, `${column} ${JSON.stringify(value)} is not an ISO 8601 time`)
  const iso = value.length > 10 && !/(Z|[+-]\d{2}:?\d{2})$/.test(value) ? `${value.replace(' ', 'T')}Z` : value.replace(' ', 'T')
  return parseTime(column, iso)
}

export async function importCsv(db: Database, options: ImportOptions): Promise<ImportResult> {
  // On PostgreSQL two writers, each on a connection of its own: the upsert into four indexes is the
  // slow side (a file of repeats only, which writes nothing, reads at 89,000 lines/s; new lines at
  // 45,000), and PostgreSQL can run two at once. A key's lines always go to the same writer, so
  // they still apply in file order. PGlite has one connection, shared by every session: one writer.
  if (db.kind !== 'postgresql') return db.withSession((session) => importLines(options, [session]))
  return db.withSession((first) => db.withSession((second) => importLines(options, [first, second])))
}

// Chunks a writer may hold queued before reading waits for it: with one, reading stopped whenever
// either writer's last chunk was still being written, and the cores were idle a sixth of the time.
// A file of 10^6 lines into an empty table, alternating: 16.3 and 15.9 s with one, 15.3 and 14.7
// with two, 14.8 and 14.4 with three. Memory stays flat: at most (3 + 1) x chunkSize rows a writer.
const QUEUED_CHUNKS = 3

async function importLines({ sheetId, input, onRejected, onProgress, chunkSize = 5000 }: ImportOptions, sessions: SqlSession[]): Promise<ImportResult> {
  const [sheet] = await sessions[0]!.query<{ active: boolean }>('SELECT active FROM sheets WHERE sheet_id = $1', [sheetId])
  if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet')
  if (!sheet.active) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} is disabled`, 'sheet')

  const counts: ImportCounts = { lines: 0, imported: 0, updated: 0, duplicate: 0, rejected: 0 }
  const { lines, ignored } = readFileLines(input, { columns: IMPORT_COLUMNS, required: 'transaction_id' })
  // One writer per session; a writer's chunks are written one at a time, in file order.
  const writers = sessions.map(
    (session) =>
      new ChunkWriter<Row>(
        chunkSize,
        async (rows) => {
          const written = await writeChunk(session, sheetId, rows)
          counts.imported += written.imported
          counts.updated += written.updated
          counts.duplicate += rows.length - written.imported - written.updated
          onProgress?.(counts)
        },
        QUEUED_CHUNKS,
      ),
  )
  try {
    for await (const { line, values, error } of lines) {
      counts.lines++
      try {
        if (error) throw error
        const row = toRow(sheetId, values)
        const full = writers[writers.length === 1 ? 0 : keyHash(row.delivery) % writers.length]!.push(row)
        if (full) await full
      } catch (error) {
        if (!(error instanceof InputError)) throw error
        counts.rejected++
        onRejected(line, error)
      }
    }
    const finished = await Promise.allSettled(writers.map((writer) => writer.done()))
    const failed = finished.find((result) => result.status === 'rejected')
    if (failed) throw failed.reason
  } catch (error) {
    // The sessions stay in use until the chunks being written have settled; what came before a
    // file error stays imported.
    await Promise.all(writers.map((writer) => writer.settled()))
    throw error
  }
  return { sheet_id: sheetId, ...counts, ignored_columns: [...ignored] }
}

/** Which writer a key's lines go to (FNV-1a of the key). */
function keyHash(delivery: Delivery): number {
  const key = keyOf(delivery)
  let hash = 0x811c9dc5
  for (let index = 0; index < key.length; index++) hash = Math.imul(hash ^ key.charCodeAt(index), 0x01000193)
  return hash >>> 0
}

function toRow(sheetId: string, values: Partial<Record<Column, string>>): Row {
  const { received_at: time, ...fields } = values
  // An empty transaction_id is refused as the receiver refuses a missing one.
  return { delivery: parseDelivery({ sheet_id: sheetId, ...fields }), receivedAt: time === undefined ? null : parseFileTime('received_at', time) }
}

// One upsert per layer (and per kind of line, below), as the receiver's batch statement does it
// (src/conversion-batch.ts): a new key is inserted; a stored one moves when the lifecycle allows the
// move (checked on the newest committed row, under its lock), payout replaced when the line has one;
// the history trigger records the move, and a line's received_at is the time of its move. The unique
// index decides which rows exist, so no plan depends on the table's statistics: a join of the lines
// with the table (UPDATE ... FROM unnest) was planned from the empty table's statistics during a
// first import, as a nested loop rescanning the lines for every stored row (2,000 moves took 12 s).
// `excluded.currency` holds the sheet's default when the line has none, so lines with and without
// a currency go in separate statements: only the first kind replaces a stored currency.
const upsertSql = (replaceCurrency: boolean) => `
  INSERT INTO conversions AS c (sheet_id, transaction_id, event, payout, currency, campaign_id, adset_id, ad_id, status, network_status, received_at)
  SELECT $1, i.transaction_id, i.event, i.payout::numeric, COALESCE(i.currency, s.default_currency), i.campaign_id, i.adset_id, i.ad_id, i.status, i.network_status,
    COALESCE(i.received_at, now())
  FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[])
         AS i(transaction_id, event, payout, currency, campaign_id, adset_id, ad_id, status, network_status, received_at)
  CROSS JOIN (SELECT default_currency FROM sheets WHERE sheet_id = $1) s
  ORDER BY i.transaction_id, i.event
  ON CONFLICT (sheet_id, transaction_id, event) DO UPDATE SET
    status = excluded.status,
    network_status = excluded.network_status,
    payout = COALESCE(excluded.payout, c.payout),
    currency = ${replaceCurrency ? 'excluded.currency' : 'c.currency'},
    updated_at = excluded.received_at
  WHERE ${allowedMoveSql('c.status', 'excluded.status')}
  RETURNING c.updated_at IS NULL AS inserted`

const UPSERT_SQL = { withCurrency: upsertSql(true), withoutCurrency: upsertSql(false) }

/**
 * Writes a chunk in one transaction. A statement can write a row once, so the lines go in layers:
 * the first line of each key (inserted, or a move of a stored conversion), then the second line of
 * each key that has one (a move), and so on; each key's lines apply in file order.
 */
async function writeChunk(session: SqlSession, sheetId: string, rows: Row[]): Promise<{ imported: number; updated: number }> {
  const layers: Row[][] = []
  const seen = new Map<string, number>()
  for (const row of rows) {
    const key = keyOf(row.delivery)
    const occurrence = seen.get(key) ?? 0
    seen.set(key, occurrence + 1)
    ;(layers[occurrence] ??= []).push(row)
  }
  let imported = 0
  let updated = 0
  await session.exec('BEGIN')
  try {
    for (const layer of layers) {
      for (const [sql, rows] of [
        [UPSERT_SQL.withCurrency, layer.filter((row) => row.delivery.currency !== undefined)],
        [UPSERT_SQL.withoutCurrency, layer.filter((row) => row.delivery.currency === undefined)],
      ] as const) {
        if (rows.length === 0) continue
        for (const { inserted } of await upsertRows(session, sql, sheetId, rows)) {
          if (inserted) imported++
          else updated++
        }
      }
    }
    await session.exec('COMMIT')
    return { imported, updated }
  } catch (error) {
    await session.exec('ROLLBACK').catch(() => {})
    throw error
  }
}

/** Upserts rows of distinct keys; returns a row for each one inserted or moved. */
function upsertRows(session: SqlSession, sql: string, sheetId: string, rows: Row[]): Promise<Array<{ inserted: boolean }>> {
  const d = (name: keyof Delivery) => rows.map((row) => row.delivery[name] ?? null)
  return session.query<{ inserted: boolean }>(sql, [
    sheetId,
    d('transaction_id'),
    rows.map((row) => row.delivery.event ?? ''),
    d('payout'),
    d('currency'),
    d('campaign_id'),
    d('adset_id'),
    d('ad_id'),
    d('status'),
    d('network_status'),
    rows.map((row) => row.receivedAt?.toISOString() ?? null),
  ])
}
