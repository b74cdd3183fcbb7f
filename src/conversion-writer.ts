// Group commit for the receiver: deliveries that arrive while a write is under way wait in a bounded
// queue and are written together by one INSERT ... ON CONFLICT DO NOTHING RETURNING. Each caller's
// promise settles only after its batch statement has committed, so a 2xx always means stored.
import type { Delivery } from './schemas/receiver.ts'
import { UnavailableError, UnknownSheetError } from './errors.ts'
import type { Database } from './database.ts'
import { isDataError } from './storage-errors.ts'

export interface WriteResult {
  status: 'stored' | 'duplicate'
  conversionId: string
}

export interface ConversionWriterOptions {
  /** The store's hot-path query (Database.query). */
  query: Database['query']
  /** Most deliveries in one statement. */
  batchMax: number
  /**
   * Longest a delivery waits for others to join its batch, in ms, while a connection is free.
   * 0: a batch starts at the end of the current turn of the event loop.
   */
  batchWaitMs: number
  /** Most deliveries held (queued or being written); a delivery beyond it is refused with 503 at once. */
  queueMax: number
  /** Statements in flight at once (PGlite has one connection: 1). */
  concurrency: number
  retryAfterSeconds: number
  onBatch?: (size: number, error?: unknown) => void
  /** A delivery was refused because the queue was full. */
  onOverload?: () => void
}

interface Pending {
  delivery: Delivery
  resolve: (result: WriteResult) => void
  reject: (error: unknown) => void
}

// One row per distinct (sheet_id, transaction_id) of a batch, with every request waiting on it.
interface Key {
  delivery: Delivery
  waiting: Pending[]
}

const keyOf = (d: Delivery) => `${d.sheet_id.length}:${d.sheet_id}${d.transaction_id}`

export class ConversionWriter {
  readonly #options: ConversionWriterOptions
  #queue: Pending[] = []
  // When the oldest queued delivery arrived (performance.now()).
  #oldestAt = 0
  #inFlight = 0
  #writingRows = 0
  #idle: Array<() => void> = []
  #timer: NodeJS.Immediate | NodeJS.Timeout | undefined

  // One error for every delivery refused: under overload, refusing must stay cheap, and a new error
  // per request would capture (and its log line format) a stack trace each time.
  readonly #overloaded: UnavailableError

  constructor(options: ConversionWriterOptions) {
    this.#options = options
    this.#overloaded = new UnavailableError('overloaded', 'too many deliveries waiting to be stored; retry later', options.retryAfterSeconds)
  }

  /** Deliveries waiting for, or in, a write. */
  get depth(): number {
    return this.#queue.length + this.#writingRows
  }

  write(delivery: Delivery): Promise<WriteResult> {
    if (this.depth >= this.#options.queueMax) {
      this.#options.onOverload?.()
      return Promise.reject(this.#overloaded)
    }
    return new Promise<WriteResult>((resolve, reject) => {
      if (this.#queue.length === 0) this.#oldestAt = performance.now()
      this.#queue.push({ delivery, resolve, reject })
      this.#schedule(true)
    })
  }

  /** Resolves once every delivery accepted so far has been written (or failed). */
  drain(): Promise<void> {
    if (this.#queue.length === 0 && this.#inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  /**
   * Starts a batch, or arranges for one, if a connection is free and deliveries are queued: at once
   * when the batch is full or its oldest delivery has waited `batchWaitMs`, else when it will have.
   * `arriving`: called for a new delivery, which lets the rest of this turn of the event loop (the
   * other deliveries parsed in it) join, even with no wait.
   */
  #schedule(arriving: boolean): void {
    if (this.#queue.length === 0 || this.#inFlight >= this.#options.concurrency) return
    const wait = this.#oldestAt + this.#options.batchWaitMs - performance.now()
    if (this.#queue.length >= this.#options.batchMax || (wait <= 0 && !arriving)) {
      this.#cancelTimer()
      this.#flush()
      return
    }
    if (this.#timer) return
    this.#timer = wait > 0 ? setTimeout(() => this.#onTimer(), wait) : setImmediate(() => this.#onTimer())
  }

  #onTimer(): void {
    this.#timer = undefined
    this.#flush()
  }

  #cancelTimer(): void {
    if (!this.#timer) return
    clearTimeout(this.#timer as NodeJS.Timeout)
    clearImmediate(this.#timer as NodeJS.Immediate)
    this.#timer = undefined
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#inFlight < this.#options.concurrency) {
      const batch = this.#queue.splice(0, this.#options.batchMax)
      if (this.#queue.length > 0) this.#oldestAt = performance.now()
      this.#inFlight++
      this.#writingRows += batch.length
      void this.#writeBatch(batch)
    }
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    const keys = new Map<string, Key>()
    for (const pending of batch) {
      const key = keyOf(pending.delivery)
      const existing = keys.get(key)
      if (existing) existing.waiting.push(pending)
      else keys.set(key, { delivery: pending.delivery, waiting: [pending] })
    }
    const settlements: Settlement[] = []
    let error: unknown
    try {
      await this.#writeKeys([...keys.values()], settlements)
    } catch (failure) {
      error = failure
    }
    // The connection is free: hand it the deliveries that queued meanwhile before answering this
    // batch, so that the next statement runs while these answers are being sent.
    this.#inFlight--
    this.#writingRows -= batch.length
    this.#schedule(false)
    for (const settle of settlements) settle()
    if (error === undefined) {
      this.#options.onBatch?.(batch.length)
    } else {
      this.#options.onBatch?.(batch.length, error)
      const failure = new UnavailableError(
        'storage_unavailable',
        'the conversion could not be stored now; retry later',
        this.#options.retryAfterSeconds,
      )
      failure.cause = error
      // Requests settled above keep their answer; a promise settles once.
      for (const pending of batch) pending.reject(failure)
    }
    if (this.#queue.length === 0 && this.#inFlight === 0) for (const resolve of this.#idle.splice(0)) resolve()
  }

  /**
   * Writes the keys, adding to `settlements` how to answer the requests of each statement that
   * committed. A statement that failed on its data is split and the halves written one after the
   * other, so one bad row cannot fail the rest; any other failure (the store is unreachable, say)
   * fails the whole batch at once.
   */
  async #writeKeys(keys: Key[], settlements: Settlement[]): Promise<void> {
    try {
      settlements.push(await this.#insert(keys))
    } catch (error) {
      if (keys.length === 1 || !isDataError(error)) throw error
      const middle = Math.ceil(keys.length / 2)
      let failure: unknown
      for (const half of [keys.slice(0, middle), keys.slice(middle)]) {
        // The batch's failure answers the requests of a half that failed.
        await this.#writeKeys(half, settlements).catch((halfError: unknown) => {
          failure ??= halfError
        })
      }
      if (failure) throw failure
    }
  }

  /** Writes the keys in one statement (two if a concurrent batch raced it); returns how to answer them. */
  async #insert(keys: Key[]): Promise<Settlement> {
    // Sorted so that concurrent batches (on any instance) take row locks in the same order.
    const rows = keys.map((key) => key.delivery).sort(compareDeliveries)
    const column = <K extends keyof Delivery>(name: K) => rows.map((row) => row[name] ?? null)
    const written = await this.#options.query<BatchRow>({
      ...BATCH_STATEMENT,
      values: [column('sheet_id'), column('transaction_id'), column('payout'), column('currency'), column('campaign_id'), column('adset_id'), column('ad_id')],
    })
    const found = new Map<string, BatchRow>()
    for (const row of written) found.set(keyOf(row), row)
    // Keys not returned conflicted with a row that a concurrent batch committed after our statement
    // took its snapshot (our INSERT waited for that batch). A new statement sees the committed rows.
    const raced = keys.filter((key) => !found.has(keyOf(key.delivery))).map((key) => key.delivery)
    if (raced.length > 0) {
      const committed = await this.#options.query<BatchRow>({
        ...COMMITTED_STATEMENT,
        values: [raced.map((d) => d.sheet_id), raced.map((d) => d.transaction_id)],
      })
      for (const row of committed) found.set(keyOf(row), row)
    }
    return () => {
      for (const key of keys) {
        const row = found.get(keyOf(key.delivery))
        // Not found at all: the sheet was disabled meanwhile.
        if (!row || row.id === null || row.outcome === 'unknown_sheet') {
          const error = new UnknownSheetError(key.delivery.sheet_id)
          for (const pending of key.waiting) pending.reject(error)
          continue
        }
        const conversionId = row.id
        const status = row.outcome
        key.waiting.forEach((pending, index) => pending.resolve({ status: index === 0 ? status : 'duplicate', conversionId }))
      }
    }
  }
}

/** Answers the requests of a committed statement. */
type Settlement = () => void

interface BatchRow {
  id: string | null
  sheet_id: string
  transaction_id: string
  outcome: 'stored' | 'duplicate' | 'unknown_sheet'
}

// One statement per batch: inserts the new rows and, in the same round trip, reads the ids of the
// repeats that were committed before it started and names the rows whose sheet is unknown or
// disabled. The SELECT of repeats sees the statement's snapshot, never the rows this statement
// inserts, so a key comes back once. Ids are cast to text: the two stores' query paths type bigint
// differently.
// On PostgreSQL it is a prepared statement, whose plan may be cached as a generic plan made once
// without the parameters, possibly while the tables were nearly empty. The lookups are LATERAL
// with OFFSET 0, which keeps them per-row index probes in any plan (a join could turn into a hash
// join over the whole conversions table on every batch).
const BATCH_STATEMENT = {
  name: 'postback_conversion_batch_v1',
  text: `
    WITH input AS (
      SELECT i.*, s.default_currency
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
             WITH ORDINALITY AS i(sheet_id, transaction_id, payout, currency, campaign_id, adset_id, ad_id, ord)
      LEFT JOIN LATERAL (SELECT s.default_currency FROM sheets s WHERE s.sheet_id = i.sheet_id AND s.active OFFSET 0) s ON true
    ), inserted AS (
      INSERT INTO conversions (sheet_id, transaction_id, payout, currency, campaign_id, adset_id, ad_id)
      SELECT sheet_id, transaction_id, payout::numeric, COALESCE(currency, default_currency), campaign_id, adset_id, ad_id
      FROM input
      WHERE default_currency IS NOT NULL
      ORDER BY ord
      ON CONFLICT (sheet_id, transaction_id) DO NOTHING
      RETURNING id, sheet_id, transaction_id
    )
    SELECT id::text AS id, sheet_id, transaction_id, 'stored' AS outcome FROM inserted
    UNION ALL
    SELECT c.id::text, c.sheet_id, c.transaction_id, 'duplicate'
    FROM input i
    CROSS JOIN LATERAL (
      SELECT c.id, c.sheet_id, c.transaction_id FROM conversions c
      WHERE c.sheet_id = i.sheet_id AND c.transaction_id = i.transaction_id OFFSET 0
    ) c
    WHERE i.default_currency IS NOT NULL
    UNION ALL
    SELECT NULL, sheet_id, transaction_id, 'unknown_sheet' FROM input WHERE default_currency IS NULL`,
}

// Repeats whose first delivery a concurrent batch committed after our statement's snapshot.
const COMMITTED_STATEMENT = {
  name: 'postback_conversion_committed_v1',
  text: `
    SELECT c.id::text AS id, c.sheet_id, c.transaction_id, 'duplicate' AS outcome
    FROM unnest($1::text[], $2::text[]) AS k(sheet_id, transaction_id)
    CROSS JOIN LATERAL (
      SELECT c.id, c.sheet_id, c.transaction_id FROM conversions c
      WHERE c.sheet_id = k.sheet_id AND c.transaction_id = k.transaction_id OFFSET 0
    ) c
    WHERE EXISTS (SELECT FROM sheets s WHERE s.sheet_id = k.sheet_id AND s.active)`,
}

function compareDeliveries(a: Delivery, b: Delivery): number {
  if (a.sheet_id !== b.sheet_id) return a.sheet_id < b.sheet_id ? -1 : 1
  return a.transaction_id < b.transaction_id ? -1 : a.transaction_id > b.transaction_id ? 1 : 0
}
