// Group commit for the receiver: deliveries that arrive while a write is under way wait in a bounded
// queue and are written together by one INSERT ... ON CONFLICT DO NOTHING RETURNING. Each caller's
// promise settles only after its batch statement has committed, so a 2xx always means stored.
import type { Delivery } from './schemas/receiver.ts'
import { UnavailableError, UnknownSheetError } from './errors.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { isDataError } from './storage-errors.ts'

export interface WriteResult {
  status: 'stored' | 'duplicate'
  conversionId: string
}

export interface ConversionWriterOptions {
  prisma: PrismaClient
  /** Most deliveries in one statement. */
  batchMax: number
  /** Most deliveries held (queued or being written); a delivery beyond it is refused with 503 at once. */
  queueMax: number
  /** Statements in flight at once (PGlite has one connection: 1). */
  concurrency: number
  retryAfterSeconds: number
  onBatch?: (size: number, error?: unknown) => void
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

interface ConversionRow {
  id: bigint
  sheet_id: string
  transaction_id: string
}

const keyOf = (d: Delivery) => `${d.sheet_id.length}:${d.sheet_id}${d.transaction_id}`

export class ConversionWriter {
  readonly #options: ConversionWriterOptions
  #queue: Pending[] = []
  #inFlight = 0
  #writingRows = 0
  #idle: Array<() => void> = []
  #scheduled = false

  constructor(options: ConversionWriterOptions) {
    this.#options = options
  }

  /** Deliveries waiting for, or in, a write. */
  get depth(): number {
    return this.#queue.length + this.#writingRows
  }

  write(delivery: Delivery): Promise<WriteResult> {
    if (this.depth >= this.#options.queueMax) {
      return Promise.reject(
        new UnavailableError('overloaded', 'too many deliveries waiting to be stored; retry later', this.#options.retryAfterSeconds),
      )
    }
    return new Promise<WriteResult>((resolve, reject) => {
      this.#queue.push({ delivery, resolve, reject })
      this.#schedule()
    })
  }

  /** Resolves once every delivery accepted so far has been written (or failed). */
  drain(): Promise<void> {
    if (this.#queue.length === 0 && this.#inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.#idle.push(resolve))
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight >= this.#options.concurrency) return
    this.#scheduled = true
    // Let the deliveries parsed in this turn of the event loop join the batch.
    setImmediate(() => {
      this.#scheduled = false
      this.#flush()
    })
  }

  #flush(): void {
    while (this.#queue.length > 0 && this.#inFlight < this.#options.concurrency) {
      const batch = this.#queue.splice(0, this.#options.batchMax)
      this.#inFlight++
      this.#writingRows += batch.length
      void this.#writeBatch(batch).finally(() => {
        this.#inFlight--
        this.#writingRows -= batch.length
        if (this.#queue.length > 0) this.#schedule()
        else if (this.#inFlight === 0) for (const resolve of this.#idle.splice(0)) resolve()
      })
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
    try {
      await this.#writeKeys([...keys.values()])
      this.#options.onBatch?.(batch.length)
    } catch (error) {
      this.#options.onBatch?.(batch.length, error)
      const failure = new UnavailableError(
        'storage_unavailable',
        'the conversion could not be stored now; retry later',
        this.#options.retryAfterSeconds,
      )
      failure.cause = error
      for (const pending of batch) pending.reject(failure)
    }
  }

  /**
   * Writes the keys. A statement that failed on its data is split and the halves written one after
   * the other, so one bad row cannot fail the rest; any other failure (the store is unreachable,
   * say) fails the whole batch at once.
   */
  async #writeKeys(keys: Key[]): Promise<void> {
    try {
      await this.#insert(keys)
    } catch (error) {
      if (keys.length === 1 || !isDataError(error)) throw error
      const middle = Math.ceil(keys.length / 2)
      let failure: unknown
      for (const half of [keys.slice(0, middle), keys.slice(middle)]) {
        // Requests of a half that succeeded are settled already; the batch's failure settles the rest.
        await this.#writeKeys(half).catch((halfError: unknown) => {
          failure ??= halfError
        })
      }
      if (failure) throw failure
    }
  }

  async #insert(keys: Key[]): Promise<void> {
    // Sorted so that concurrent batches (on any instance) take row locks in the same order.
    const rows = keys.map((key) => key.delivery).sort(compareDeliveries)
    const column = <K extends keyof Delivery>(name: K) => rows.map((row) => row[name] ?? null)
    const inserted = await this.#options.prisma.$queryRaw<ConversionRow[]>(Prisma.sql`
      INSERT INTO conversions (sheet_id, transaction_id, payout, currency, campaign_id, adset_id, ad_id)
      SELECT i.sheet_id, i.transaction_id, i.payout::numeric, COALESCE(i.currency, s.default_currency),
             i.campaign_id, i.adset_id, i.ad_id
      FROM unnest(${column('sheet_id')}::text[], ${column('transaction_id')}::text[], ${column('payout')}::text[],
                  ${column('currency')}::text[], ${column('campaign_id')}::text[], ${column('adset_id')}::text[],
                  ${column('ad_id')}::text[])
           WITH ORDINALITY AS i(sheet_id, transaction_id, payout, currency, campaign_id, adset_id, ad_id, ord)
      JOIN sheets s ON s.sheet_id = i.sheet_id AND s.active
      ORDER BY i.ord
      ON CONFLICT (sheet_id, transaction_id) DO NOTHING
      RETURNING id, sheet_id, transaction_id`)
    const byKey = new Map(keys.map((key) => [keyOf(key.delivery), key]))
    for (const row of inserted) settle(byKey, row, 'stored')

    if (byKey.size === 0) return
    // The rest are repeats or belong to an unknown or disabled sheet. This is a new statement, so it
    // sees rows that a concurrent batch committed while ours waited on them.
    const rest = [...byKey.values()].map((key) => key.delivery)
    const existing = await this.#options.prisma.$queryRaw<ConversionRow[]>(Prisma.sql`
      SELECT c.id, c.sheet_id, c.transaction_id
      FROM unnest(${rest.map((d) => d.sheet_id)}::text[], ${rest.map((d) => d.transaction_id)}::text[]) AS k(sheet_id, transaction_id)
      JOIN conversions c ON c.sheet_id = k.sheet_id AND c.transaction_id = k.transaction_id
      JOIN sheets s ON s.sheet_id = c.sheet_id AND s.active`)
    for (const row of existing) settle(byKey, row, 'duplicate')
    for (const key of byKey.values()) {
      const error = new UnknownSheetError(key.delivery.sheet_id)
      for (const pending of key.waiting) pending.reject(error)
    }
  }
}

function settle(byKey: Map<string, Key>, row: ConversionRow, status: WriteResult['status']): void {
  const id = keyOf({ sheet_id: row.sheet_id, transaction_id: row.transaction_id })
  const key = byKey.get(id)
  if (!key) return
  byKey.delete(id)
  const conversionId = row.id.toString()
  key.waiting.forEach((pending, index) =>
    pending.resolve({ status: index === 0 ? status : 'duplicate', conversionId }),
  )
}

function compareDeliveries(a: Delivery, b: Delivery): number {
  if (a.sheet_id !== b.sheet_id) return a.sheet_id < b.sheet_id ? -1 : 1
  return a.transaction_id < b.transaction_id ? -1 : a.transaction_id > b.transaction_id ? 1 : 0
}
