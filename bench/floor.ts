// The benchmark's floor (issue 15): the least that a correct group-commit receiver of this design
// does, as a route of its own minimal server (bench/server.ts starts it instead of the app when told
// `floor`). The receiver is measured against it to see what its features cost beyond storing a
// delivery at all.
//
// What it does, and nothing more:
// - bare Fastify: no logger, no hooks, no rate limits, no metrics, no request-id plugin, no schemas;
// - checks the two parameters a delivery cannot be stored without (sheet_id, transaction_id) and
//   maps `status` (a Map lookup; an unknown word is a 400);
// - queues the deliveries of one turn of the event loop and writes them, one row per key, sorted
//   (concurrent statements then take row locks in one order and cannot deadlock), with one
//   `INSERT ... ON CONFLICT ... RETURNING` into the same `conversions` table (key
//   (sheet_id, transaction_id, event));
// - applies the lifecycle's moves (src/lifecycle.ts): a later status of a stored key that the
//   lifecycle allows (pending to approved, say) moves the conversion, by `ON CONFLICT DO UPDATE ...
//   WHERE` the move is allowed, which decides on the newest committed version of the row under its
//   lock, as two concurrent moves of one key need; the table's triggers keep its history;
// - answers each delivery 200 only after its own statement committed, with the row's id and status
//   (`stored`, `updated`, or `duplicate` for a repeat or a refused move).
// The statement is bare; the rows of repeats (keys it returned no row for) are read by a second
// statement, only when there are any.
// PostgreSQL: `pg` directly, the insert a named prepared statement, up to as many statements in
// flight as the receiver may have (DB_POOL_MAX / 2, 5 by default), each started at once. (The
// receiver runs one at a time while they are quick, RECEIVER_PARALLEL_AFTER_MS: its batching policy,
// part of what is measured against this one.) Its plans are PostgreSQL's choice, as the receiver's
// are (plan_cache_mode = auto: a batch of a few rows is planned again at each run; forcing the
// cached plan was tried on 2026-12-01 and undone: BENCHMARKS.md, tenth pass).
// PGlite: its one connection, one statement at a time; the insert as a function of the session,
// called by a statement prepared in the session (src/pglite-prepared.ts), as the receiver's
// statement is (PGlite's query prepares nothing: until 2026-12-01 the floor's insert was parsed and
// planned at every run there, which the receiver's was not; until 2026-12-02 its call was, as the
// receiver's was; `npx tsx bench/pglite-statement.ts` times each way).
// (Until 2026-11-29 (late) the insert on PostgreSQL also read the repeats' ids in its round trip, a UNION ALL
// probing the key of every row: that made its backends spend 2 to 3 times the receiver's CPU a
// delivery with unique ids, and put the receiver ahead of the floor.)
//
// Why it is the floor: every correct receiver of this design does at least this (parse the
// request, commit the row or the move, answer with its id and status, tell a repeat its id), in the
// cheapest way this stack allows. It does not check that the sheet is active (the foreign key
// refuses an unknown one, failing its whole batch with 503), a move replaces only the status and the
// payout (not the currency or the network's word), and a bad value (payout, say) fails its whole
// batch: the receiver's validation and batch splitting exist for that, and the benchmark sends no
// such delivery.
//
// `bare` (bench/server.ts BACKLOG floor bare; the bench's `bare-floor` route): the floor as issue 15
// wrote it before the lifecycle landed, `INSERT ... ON CONFLICT DO NOTHING RETURNING`, which makes
// no moves: a later status answers `duplicate` and is lost. Until 2026-11-30 this was the floor; a
// receiver that drops status updates is not a correct one of this design, but its figures are kept
// beside the floor's so that every ratio can be read against either.
import { mkdirSync } from 'node:fs'
import { PGlite } from '@electric-sql/pglite'
import Fastify, { type FastifyInstance } from 'fastify'
import pg from 'pg'
import type { Config } from '../src/config.ts'
import { lockDataDir } from '../src/data-dir-lock.ts'
import { allowedMoveSql, mapStatus, type ConversionStatus } from '../src/lifecycle.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { PreparedStatements } from '../src/pglite-prepared.ts'
import { functionCall, functionDefinition } from '../src/session-function.ts'

export const FLOOR_PATH = '/bench/floor'

const BATCH_MAX = 500

interface Row {
  sheet_id: string
  transaction_id: string
  event: string
  payout: string | null
  currency: string | null
  campaign_id: string | null
  adset_id: string | null
  ad_id: string | null
  status: ConversionStatus
}

interface Answer {
  status: 'stored' | 'updated' | 'duplicate'
  conversion_id: string
  conversion_status: ConversionStatus
}

interface Pending {
  row: Row
  /** Called once: an error, or null and the answer. */
  done: (error: unknown, answer?: Answer) => void
}

interface Statement {
  /** Named: prepared on each connection. */
  name?: string
  text: string
  values: unknown[]
}

interface KeyRow {
  id: string
  sheet_id: string
  transaction_id: string
  event: string
  status: ConversionStatus
  /** Written by this statement: inserted (true) or moved (false); absent for a repeat's stored row. */
  stored?: boolean
}

/** A key's row after the statement: its id and status, and what the statement did to it. */
interface Written {
  id: string
  status: ConversionStatus
  outcome: Answer['status']
}

interface FloorStore {
  query(statement: Statement): Promise<KeyRow[]>
  /** The insert statement of this store. */
  insert: { name: string; text: string }
  concurrency: number
  close(): Promise<void>
}

// The columns a delivery fills, in the order of the statements' parameters (one text[] each).
export const FIELDS = ['sheet_id', 'transaction_id', 'event', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id', 'status'] as const
const COLUMNS = FIELDS.join(', ')
const UNNEST = `unnest(${FIELDS.map((_, index) => `$${index + 1}::text[]`).join(', ')}) AS i(${COLUMNS})`
const ROWS = `SELECT i.sheet_id, i.transaction_id, i.event, i.payout::numeric,
      COALESCE(i.currency, (SELECT s.default_currency FROM sheets s WHERE s.sheet_id = i.sheet_id)),
      i.campaign_id, i.adset_id, i.ad_id, i.status
    FROM ${UNNEST}`

// The floor's statement, on both stores: new keys inserted, allowed moves applied (a move sets
// updated_at, so a row that has none was inserted by this statement).
export const FLOOR_UPSERT = {
  name: 'bench_floor_upsert',
  text: `
    INSERT INTO conversions AS c (${COLUMNS})
    ${ROWS}
    ON CONFLICT (sheet_id, transaction_id, event) DO UPDATE SET
      status = excluded.status, payout = COALESCE(excluded.payout, c.payout), updated_at = now()
    WHERE ${allowedMoveSql('c.status', 'excluded.status')}
    RETURNING id::text AS id, sheet_id, transaction_id, event, status, updated_at IS NULL AS stored`,
}

// The bare floor's: the statement the issue names (INSERT ... ON CONFLICT DO NOTHING RETURNING).
// Exported for bench/pglite-statement.ts.
export const FLOOR_INSERT = {
  name: 'bench_floor_insert',
  text: `
    INSERT INTO conversions (${COLUMNS})
    ${ROWS}
    ON CONFLICT (sheet_id, transaction_id, event) DO NOTHING
    RETURNING id::text AS id, sheet_id, transaction_id, event, status, true AS stored`,
}

// The repeats' rows: one table and arrays (`= ANY` over the repeats' distinct sheets, ids and
// events; rows of other combinations are left out by the caller), planned at each run: with the
// bench's one sheet and event, one scan of the key's index. Until 2026-11-30 (late) a prepared join
// of the keys: its generic plan, made while the table was nearly empty, can read the whole sheet for
// each key (seen in one bench run: the floor at 8,736 req/s with half repeats, 167 µs of CPU a
// delivery, against 16,956 and 70 in the run before); a floor that can do that is not a correct
// receiver. (The receiver reads its repeats in the batch statement's own call instead, a round trip
// less: src/conversion-batch.ts, BATCH_STATEMENT.)
const LOOKUP_STATEMENT = {
  text: `
    SELECT c.id::text AS id, c.sheet_id, c.transaction_id, c.event, c.status
    FROM conversions c
    WHERE c.sheet_id = ANY($1::text[]) AND c.transaction_id = ANY($2::text[]) AND c.event = ANY($3::text[])`,
}

const keyOf = (row: { sheet_id: string; transaction_id: string; event: string }) => `${row.sheet_id}\u0000${row.event}\u0000${row.transaction_id}`

function compareKeys(a: Row, b: Row): number {
  if (a.sheet_id !== b.sheet_id) return a.sheet_id < b.sheet_id ? -1 : 1
  if (a.transaction_id !== b.transaction_id) return a.transaction_id < b.transaction_id ? -1 : 1
  return a.event < b.event ? -1 : a.event > b.event ? 1 : 0
}

/** The group commit: one statement per turn of the event loop while a connection is free. */
class FloorWriter {
  readonly #store: FloorStore
  #queue: Pending[] = []
  #inFlight = 0
  #scheduled = false
  #idle: Array<() => void> = []
  /** Statements written and the deliveries in them, for the bench's batch-size column. */
  readonly batches = { count: 0, rows: 0 }

  constructor(store: FloorStore) {
    this.#store = store
  }

  /** Queues a row; `done` is called once its statement has committed (or failed). */
  write(row: Row, done: Pending['done']): void {
    this.#queue.push({ row, done })
    if (this.#scheduled || this.#inFlight >= this.#store.concurrency) return
    // The rest of this turn's requests join the batch.
    this.#scheduled = true
    setImmediate(() => {
      this.#scheduled = false
      this.#flush()
    })
  }

  /** Resolves once nothing is queued or being written. */
  drain(): Promise<void> {
    if (this.#queue.length === 0 && this.#inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#inFlight < this.#store.concurrency) {
      this.#inFlight++
      void this.#writeBatch(this.#queue.splice(0, BATCH_MAX))
    }
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    this.batches.count++
    this.batches.rows += batch.length
    // Per key, the runs of its deliveries with one status, in arrival order: statement n writes the
    // n-th run of every key (one row per key and statement), so that a key's statuses apply in the
    // order they came, as the receiver does; a run's later deliveries are its repeats.
    const runs = new Map<string, Pending[][]>()
    for (const pending of batch) {
      const key = keyOf(pending.row)
      const keyRuns = runs.get(key)
      const last = keyRuns?.at(-1)
      if (!keyRuns) runs.set(key, [[pending]])
      else if (last![0]!.row.status === pending.row.status) last!.push(pending)
      else keyRuns.push([pending])
    }
    // How to answer the deliveries of each statement that committed; on a failure, the rest.
    const settlements: Array<() => void> = []
    let failure: { error: unknown } | undefined
    const answered = new Set<Pending[]>()
    try {
      for (let round = 0; ; round++) {
        const next: Pending[][] = []
        for (const keyRuns of runs.values()) if (keyRuns[round]) next.push(keyRuns[round]!)
        if (next.length === 0) break
        const written = await this.#writeRows(next.map((run) => run[0]!.row).sort(compareKeys))
        for (const run of next) answered.add(run)
        settlements.push(() => {
          for (const run of next) {
            const found = written.get(keyOf(run[0]!.row))
            if (!found) {
              for (const pending of run) pending.done(new Error('no row after the insert'))
              continue
            }
            run.forEach((pending, index) =>
              pending.done(null, { status: index === 0 ? found.outcome : 'duplicate', conversion_id: found.id, conversion_status: found.status }),
            )
          }
        })
      }
    } catch (error) {
      failure = { error }
    }
    // The next batch goes out before this one is answered, as in the receiver.
    this.#inFlight--
    this.#flush()
    for (const settle of settlements) settle()
    if (failure) for (const keyRuns of runs.values()) for (const run of keyRuns) if (!answered.has(run)) for (const pending of run) pending.done(failure.error)
    if (this.#queue.length === 0 && this.#inFlight === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }

  async #writeRows(rows: Row[]): Promise<Map<string, Written>> {
    const column = (name: keyof Row) => rows.map((row) => row[name])
    const written = await this.#store.query({
      ...this.#store.insert,
      values: FIELDS.map(column),
    })
    const ids = new Map<string, Written>()
    for (const row of written) ids.set(keyOf(row), { id: row.id, status: row.status, outcome: row.stored === true ? 'stored' : 'updated' })
    // No row: a repeat, or one whose first delivery a concurrent statement committed after
    // this statement's snapshot (the insert waited for it). A new statement sees the committed row.
    const repeats = rows.filter((row) => !ids.has(keyOf(row)))
    if (repeats.length > 0) {
      const wanted = new Set(repeats.map(keyOf))
      const distinct = (name: 'sheet_id' | 'transaction_id' | 'event') => [...new Set(repeats.map((row) => row[name]))]
      const found = await this.#store.query({ ...LOOKUP_STATEMENT, values: [distinct('sheet_id'), distinct('transaction_id'), distinct('event')] })
      for (const row of found) {
        const key = keyOf(row)
        if (wanted.has(key)) ids.set(key, { id: row.id, status: row.status, outcome: 'duplicate' })
      }
    }
    return ids
  }
}

async function openFloorStore(config: Config, bare: boolean): Promise<FloorStore> {
  const insert = bare ? FLOOR_INSERT : FLOOR_UPSERT
  if (config.DATABASE_URL) {
    // The receiver's statements in flight (plugins/ingest.ts), one connection each.
    const inFlight = Math.max(1, Math.floor(config.DB_POOL_MAX / 2))
    // Idle connections kept 30 s, as the app's pool does (pg's default, 10 s, would close them while
    // the bench measures the other routes, and the floor would pay for reconnecting).
    const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: inFlight, idleTimeoutMillis: 30_000 })
    pool.on('error', () => undefined)
    return {
      query: async (statement) => (await pool.query(statement)).rows,
      insert,
      concurrency: inFlight,
      close: () => pool.end(),
    }
  }
  mkdirSync(config.DATA_DIR, { recursive: true })
  const lock = lockDataDir(config.DATA_DIR)
  const pglite = await PGlite.create(config.DATA_DIR)
  try {
    await pglite.exec(functionDefinition({ ...insert, signature: FLOOR_SIGNATURE }))
  } catch (error) {
    await pglite.close().finally(() => lock.release())
    throw error
  }
  const prepared = new PreparedStatements(pglite)
  return {
    // The insert through its function, called by a prepared statement as the receiver's is; the
    // repeats' read as it is.
    query: async (statement) =>
      statement.name === insert.name
        ? await prepared.query<KeyRow>(insert.name, functionCall(statement), statement.values)
        : (await pglite.query<KeyRow>(statement.text, statement.values)).rows,
    insert,
    concurrency: 1,
    async close() {
      try {
        await pglite.close()
      } finally {
        lock.release()
      }
    },
  }
}

/**
 * The parameters and result of the floor's two statements, with which they run as functions of
 * PGlite's session, as the receiver's batch statement runs (src/database.ts, Statement.signature):
 * parsed once, their plans PGlite's choice (PGlite's query parses and plans every statement it runs).
 */
export const FLOOR_SIGNATURE = {
  parameters: FIELDS.map(() => 'text[]'),
  returns: 'id text, sheet_id text, transaction_id text, event text, status text, stored boolean',
}

/** Deliveries as the floor's statements take them, one text[] a field (no event, every delivery approved). For the statement scripts. */
export function floorValues(deliveries: Delivery[]): unknown[][] {
  return FIELDS.map((field) => deliveries.map((row) => (field === 'event' ? '' : field === 'status' ? 'approved' : (row[field] ?? null))))
}

const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : null)

/** The floor's server (`bare`: the bare floor's), listening; closing it answers what is queued, then closes the store. */
export async function startFloor(config: Config, backlog: number, bare = false): Promise<{ url: string; close(): Promise<void> }> {
  const store = await openFloorStore(config, bare)
  const writer = new FloorWriter(store)
  const app: FastifyInstance = Fastify({ logger: false })
  // Answered from the writer's callback, as the receiver is (no async handler, promise or await
  // between a commit and the answer).
  app.get(FLOOR_PATH, (request, reply) => {
    const query = request.query as Record<string, unknown>
    const sheetId = text(query.sheet_id)
    const transactionId = text(query.transaction_id)
    if (!sheetId || !transactionId) return reply.code(400).send({ error: 'missing_parameter' })
    let status: ConversionStatus
    try {
      status = mapStatus(text(query.status) ?? undefined)
    } catch {
      return reply.code(400).send({ error: 'invalid_parameter', parameter: 'status' })
    }
    writer.write(
      {
        sheet_id: sheetId,
        transaction_id: transactionId,
        event: text(query.event) ?? '',
        payout: text(query.payout),
        currency: text(query.currency)?.toUpperCase() ?? null,
        campaign_id: text(query.campaign_id),
        adset_id: text(query.adset_id),
        ad_id: text(query.ad_id),
        status,
      },
      (error, answer) => (error ? reply.code(503).send({ error: 'storage_unavailable' }) : reply.send(answer)),
    )
  })
  // The two lines of the app's /metrics that bench/run.ts reads (postback_batch_size), nothing else.
  app.get('/metrics', async () => `postback_batch_size_sum ${writer.batches.rows}\npostback_batch_size_count ${writer.batches.count}\n`)
  const url = await app.listen({ host: config.HOST, port: config.PORT, backlog })
  return {
    url,
    async close() {
      await app.close()
      await writer.drain()
      await store.close()
    },
  }
}
