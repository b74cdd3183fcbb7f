// Diagnostics of deliveries that leave no new conversion row, kept for known sheets only, so that
// "my network sends but nothing shows" has an answer: the bounded log of rejected deliveries
// (newest entries per sheet) and hourly counters of duplicates, status updates and rejections by reason.
// It is diagnostics, not data: entries are buffered and written in the background (a flood of bad
// requests costs one statement per flush, never a wait in the answer), the buffer is capped, and
// what is buffered when the process is killed is lost.
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import type { CamelKeys } from './schemas/common.ts'
import type { Rejection } from './schemas/management.ts'
import { redactQueryValues } from './logging.ts'

/** A rejected delivery as the receiver reports it: the log entry the API shows, before it has an id and a time. */
export type RejectedDelivery = CamelKeys<Omit<Rejection, 'id' | 'received_at'>>

export interface DeliveryLogOptions {
  prisma: PrismaClient
  maxPerSheet: number
  /** Log entries buffered before new ones are dropped (and counted in `dropped`); counters are always kept. */
  bufferMax?: number
  flushIntervalMs?: number
  onError?: (error: unknown) => void
}

const RAW_QUERY_MAX = 2048
const HOUR_MS = 3_600_000

type Outcome = 'duplicate' | 'updated' | 'rejected'
/** sheet id, hour (ISO), outcome, reason, count */
type CountRow = [string, string, Outcome, string, number]

export class DeliveryLog {
  readonly #options: Required<Omit<DeliveryLogOptions, 'onError'>> & Pick<DeliveryLogOptions, 'onError'>
  #rejections: Array<RejectedDelivery & { receivedAt: Date }> = []
  // Counts by hour, outcome, reason and sheet, each with its row; keyed by their text joined by
  // spaces, the sheet id last: the hour (ISO), the outcome and the reason (an error code, or '')
  // have no space, so each key names one tuple, whatever the sheet id holds.
  #counts = new Map<string, CountRow>()
  // The current hour's start and its text: counted on every repeat, made again only when it changes
  // (a Date and its ISO text on each count were a third of a repeat's share of the writer's CPU).
  #hourStart = -1
  #hour = ''
  #tests = new Map<string, { outcome: string; at: Date }>()
  #timer: NodeJS.Timeout | undefined
  #writing: Promise<void> = Promise.resolve()
  dropped = 0

  constructor(options: DeliveryLogOptions) {
    this.#options = { bufferMax: 10_000, flushIntervalMs: 250, ...options }
  }

  /**
   * Keeps a rejected delivery, its query with the values of secret-looking parameters (`token`,
   * `key`, ...) redacted before anything is stored. A test postback is kept but not counted.
   */
  recordRejection(rejection: RejectedDelivery): void {
    if (!rejection.test) this.#count(rejection.sheetId, 'rejected', rejection.reason)
    if (this.#rejections.length >= this.#options.bufferMax) {
      this.dropped++
      return
    }
    const rawQuery = redactQueryValues(`?${rejection.rawQuery}`).slice(1, RAW_QUERY_MAX + 1)
    this.#rejections.push({ ...rejection, rawQuery, receivedAt: new Date() })
  }

  /** The outcome of a test postback (`ok` or its error code): the newest per sheet is kept. */
  recordTest(sheetId: string, outcome: string): void {
    this.#tests.set(sheetId, { outcome, at: new Date() })
    this.#timer ??= setTimeout(() => { void this.flush() }, this.#options.flushIntervalMs)
  }

  /** A delivery that was committed without storing a new conversion: a repeat, or a status move. */
  recordOutcome(sheetId: string, outcome: 'duplicate' | 'updated'): void {
    this.#count(sheetId, outcome, '')
  }

  #count(sheetId: string, outcome: Outcome, reason: string): void {
    const hourStart = Math.floor(Date.now() / HOUR_MS) * HOUR_MS
    if (hourStart !== this.#hourStart) {
      this.#hourStart = hourStart
      this.#hour = new Date(hourStart).toISOString()
    }
    const key = `${this.#hour} ${outcome} ${reason} ${sheetId}`
    const row = this.#counts.get(key)
    if (row) row[4]++
    else this.#counts.set(key, [sheetId, this.#hour, outcome, reason, 1])
    this.#timer ??= setTimeout(() => { void this.flush() }, this.#options.flushIntervalMs)
  }

  /** Writes what is buffered; resolves when it (and any write before it) is done. */
  flush(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const rejections = this.#rejections.splice(0)
    const counts: CountRow[] = [...this.#counts.values()]
    this.#counts.clear()
    const tests = [...this.#tests]
    this.#tests.clear()
    this.#writing = this.#writing.then(() => this.#write(rejections, counts, tests))
    return this.#writing
  }

  async #write(
    rejections: Array<RejectedDelivery & { receivedAt: Date }>,
    counts: readonly CountRow[],
    tests: Array<[string, { outcome: string; at: Date }]>,
  ): Promise<void> {
    try {
      if (tests.length) await this.#writeTests(tests)
      if (counts.length) await this.#writeCounts(counts)
      if (rejections.length) await this.#writeRejections(rejections)
    } catch (error) {
      this.dropped += rejections.length
      this.#options.onError?.(error)
    }
  }

  async #writeTests(tests: Array<[string, { outcome: string; at: Date }]>): Promise<void> {
    await this.#options.prisma.$executeRaw(Prisma.sql`
      UPDATE sheets s SET last_test_at = t.at, last_test_outcome = t.outcome
      FROM unnest(${tests.map(([id]) => id)}::text[], ${tests.map(([, test]) => test.at.toISOString())}::timestamptz[],
                  ${tests.map(([, test]) => test.outcome)}::text[]) AS t(sheet_id, at, outcome)
      WHERE s.sheet_id = t.sheet_id AND (s.last_test_at IS NULL OR s.last_test_at <= t.at)`)
  }

  async #writeCounts(counts: readonly CountRow[]): Promise<void> {
    const column = (index: number) => counts.map((row) => row[index])
    // Joined with sheets: deliveries naming an unknown sheet are not counted.
    await this.#options.prisma.$executeRaw(Prisma.sql`
      INSERT INTO delivery_counters (sheet_id, hour, outcome, reason, count)
      SELECT c.sheet_id, c.hour, c.outcome, c.reason, c.count
      FROM unnest(${column(0)}::text[], ${column(1)}::timestamptz[], ${column(2)}::text[], ${column(3)}::text[], ${column(4)}::int[])
           AS c(sheet_id, hour, outcome, reason, count)
      JOIN sheets s ON s.sheet_id = c.sheet_id
      ORDER BY 1, 2, 3, 4
      ON CONFLICT (sheet_id, hour, outcome, reason) DO UPDATE SET count = delivery_counters.count + excluded.count`)
  }

  async #writeRejections(entries: Array<RejectedDelivery & { receivedAt: Date }>): Promise<void> {
    const { prisma, maxPerSheet } = this.#options
    const column = <K extends keyof RejectedDelivery>(name: K) => entries.map((entry) => entry[name])
    const times = entries.map((entry) => entry.receivedAt.toISOString())
    await prisma.$executeRaw(Prisma.sql`
      INSERT INTO delivery_rejections (sheet_id, reason, parameter, raw_query, remote_address, test, received_at)
      SELECT r.sheet_id, r.reason, r.parameter, r.raw_query, r.remote_address, r.test, r.received_at
      FROM unnest(${column('sheetId')}::text[], ${column('reason')}::text[], ${column('parameter')}::text[],
                  ${column('rawQuery')}::text[], ${column('remoteAddress')}::text[], ${column('test')}::boolean[], ${times}::timestamptz[])
           WITH ORDINALITY AS r(sheet_id, reason, parameter, raw_query, remote_address, test, received_at, ord)
      JOIN sheets s ON s.sheet_id = r.sheet_id
      ORDER BY r.ord`)
    const sheets = [...new Set(column('sheetId'))]
    await prisma.$executeRaw(Prisma.sql`
      DELETE FROM delivery_rejections d
      USING (
        SELECT t.sheet_id, (
          SELECT id FROM delivery_rejections WHERE sheet_id = t.sheet_id ORDER BY id DESC OFFSET ${maxPerSheet} LIMIT 1
        ) AS oldest_dropped
        FROM unnest(${sheets}::text[]) AS t(sheet_id)
      ) cut
      WHERE d.sheet_id = cut.sheet_id AND d.id <= cut.oldest_dropped`)
  }
}
