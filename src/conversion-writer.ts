// Group commit for the receiver: deliveries that arrive while a write is under way wait in a bounded
// queue and are written together by one statement (src/conversion-batch.ts). Each caller's promise
// settles only after its batch statement has committed, so a 2xx always means stored.
import { keyOf, LookupFailedError, statusOf, writeDeliveries, type KeyOutcome, type WriteResult } from './conversion-batch.ts'
import type { Delivery } from './schemas/receiver.ts'
import { AppError, UnavailableError, UnknownSheetError } from './errors.ts'
import type { Database } from './database.ts'
import { dataErrorMessage, isDataError } from './storage-errors.ts'

export type { WriteResult }

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
  /** Most statements in flight at once (PGlite has one connection: 1). */
  concurrency: number
  /**
   * One statement at a time while statements are quick: deliveries that come meanwhile wait for it
   * and go together into the next, so batches grow with the load, and the database does less work
   * per delivery than with several smaller statements at once. Another statement starts beside
   * those in flight once the newest of them has run this long (ms; a lock wait, a slow disk), or
   * when a full batch (batchMax) is waiting, up to `concurrency`.
   */
  parallelAfterMs: number
  retryAfterSeconds: number
  onBatch?: (size: number, error?: unknown) => void
  /** A delivery was refused because the queue was full. */
  onOverload?: () => void
  /** An answer (`submit`'s callback) threw; by default the error is thrown again, uncaught. */
  onAnswerError?: (error: unknown) => void
}

/** Told how a delivery ended, once: an error, or null and the result (after its statement committed). */
export type Answer = (error: Error | null, result?: WriteResult) => void

interface Pending {
  delivery: Delivery
  /** When it was queued (performance.now()). */
  arrivedAt: number
  answer: Answer
  answered: boolean
}

/** An answer that threw (a bug): thrown again on its own, as an uncaught error. */
function throwLater(error: unknown): void {
  process.nextTick(() => {
    throw error
  })
}

// One delivery to write for a key, with every request of the batch that it answers: consecutive
// deliveries of one key with the same status share it (the later ones are repeats).
interface Run {
  key: string
  delivery: Delivery
  waiting: Pending[]
}

export class ConversionWriter {
  readonly #options: ConversionWriterOptions
  #queue: Pending[] = []
  #inFlight = 0
  #writingRows = 0
  #idle: Array<() => void> = []
  #timer: NodeJS.Immediate | NodeJS.Timeout | undefined
  /** When the newest statement started (performance.now()); it may have ended while an older one runs on. */
  #newestStart = 0
  #parallelTimer: NodeJS.Timeout | undefined

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

  /**
   * Answers a delivery, if it has not been answered yet (a batch's failure answers those of its
   * requests that a committed statement did not). An answer that throws does not keep the others
   * of its batch from theirs.
   */
  #answer(pending: Pending, error: Error | null, result?: WriteResult): void {
    if (pending.answered) return
    pending.answered = true
    try {
      pending.answer(error, result)
    } catch (thrown) {
      ;(this.#options.onAnswerError ?? throwLater)(thrown)
    }
  }

  write(delivery: Delivery): Promise<WriteResult> {
    return new Promise<WriteResult>((resolve, reject) => this.submit(delivery, (error, result) => (error ? reject(error) : resolve(result!))))
  }

  /**
   * `write` for the receiver's route, which answers from `answer` (called once, at once when the
   * queue is full): no promise, async function or await between a commit and the request's answer
   * (a request's share of them was about 1 µs on the receiver's path).
   */
  submit(delivery: Delivery, answer: Answer): void {
    if (this.depth >= this.#options.queueMax) {
      this.#options.onOverload?.()
      answer(this.#overloaded)
      return
    }
    this.#queue.push({ delivery, arrivedAt: performance.now(), answer, answered: false })
    this.#schedule(true)
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
    if (this.#inFlight > 0 && this.#queue.length < this.#options.batchMax) {
      const quick = this.#newestStart + this.#options.parallelAfterMs - performance.now()
      if (quick > 0) {
        // Look again when the statement has run that long (its end schedules anyway).
        // Unref'd: it never holds a process open (a statement in flight does).
        this.#parallelTimer ??= setTimeout(() => {
          this.#parallelTimer = undefined
          this.#schedule(false)
        }, quick).unref()
        return
      }
    }
    const wait = this.#queue[0]!.arrivedAt + this.#options.batchWaitMs - performance.now()
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
    this.#schedule(false)
  }

  #cancelTimer(): void {
    if (!this.#timer) return
    clearTimeout(this.#timer as NodeJS.Timeout)
    clearImmediate(this.#timer as NodeJS.Immediate)
    this.#timer = undefined
  }

  #flush(): void {
    if (this.#queue.length === 0 || this.#inFlight >= this.#options.concurrency) return
    const batch = this.#queue.splice(0, this.#options.batchMax)
    this.#newestStart = performance.now()
    this.#inFlight++
    this.#writingRows += batch.length
    void this.#writeBatch(batch)
    // A full batch more may go beside it at once.
    this.#schedule(false)
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    // Per key, the runs of its deliveries in arrival order. Statement n writes the n-th run of every
    // key, so that one key's different statuses apply one at a time, in the order they came.
    const runs = new Map<string, Run[]>()
    let rounds = 1
    for (const pending of batch) {
      const key = keyOf(pending.delivery)
      const keyRuns = runs.get(key)
      if (keyRuns === undefined) {
        runs.set(key, [{ key, delivery: pending.delivery, waiting: [pending] }])
        continue
      }
      const last = keyRuns.at(-1)!
      if (statusOf(last.delivery) === statusOf(pending.delivery)) last.waiting.push(pending)
      else rounds = Math.max(rounds, keyRuns.push({ key, delivery: pending.delivery, waiting: [pending] }))
    }
    const settlements: Settlement[] = []
    let error: unknown
    // Whether it failed: a rejection's reason may be anything, undefined too.
    let failed = false
    try {
      for (let round = 0; round < rounds; round++) {
        const next: Run[] = []
        for (const keyRuns of runs.values()) if (keyRuns[round]) next.push(keyRuns[round]!)
        await this.#writeRuns(next, settlements)
      }
    } catch (failure) {
      error = failure
      failed = true
    }
    // The connection is free: hand it the deliveries that queued meanwhile before answering this
    // batch, so that the next statement runs while these answers are being sent.
    this.#inFlight--
    this.#writingRows -= batch.length
    this.#schedule(false)
    for (const settle of settlements) settle()
    if (failed) {
      const failure = isDataError(error)
        ? refusedValue(error)
        : new UnavailableError('storage_unavailable', 'the conversion could not be stored now; retry later', this.#options.retryAfterSeconds)
      failure.cause = error
      // Requests answered above keep their answer.
      for (const pending of batch) this.#answer(pending, failure)
    }
    if (this.#queue.length === 0 && this.#inFlight === 0) for (const resolve of this.#idle.splice(0)) resolve()
    // Observers last: every request is answered whatever they do.
    try {
      this.#options.onBatch?.(batch.length, error)
    } catch {
      // An observer's failure is not the deliveries' concern.
    }
  }

  /**
   * Writes the runs (one per key), adding to `settlements` how to answer the requests of each
   * statement that committed. A statement that failed on its data is split and the halves written one
   * after the other, so one bad row cannot fail the rest; any other failure (the store is
   * unreachable, say) fails at once, without trying what is left.
   */
  async #writeRuns(runs: Run[], settlements: Settlement[]): Promise<void> {
    try {
      const outcomes = await writeDeliveries(this.#options.query, runs.map((run) => run.delivery))
      settlements.push(() => this.#settle(runs, outcomes))
    } catch (error) {
      if (error instanceof LookupFailedError) {
        // What the batch statement wrote is committed and answered as such; the batch's failure
        // answers the rest.
        settlements.push(() => this.#settle(runs, error.written))
        throw error.cause
      }
      if (runs.length === 1 || !isDataError(error)) throw error
      const middle = Math.ceil(runs.length / 2)
      let dataFailure: unknown
      for (const half of [runs.slice(0, middle), runs.slice(middle)]) {
        try {
          await this.#writeRuns(half, settlements)
        } catch (halfError) {
          if (!isDataError(halfError)) throw halfError
          // The batch's failure answers the requests of a half that failed on its data.
          dataFailure ??= halfError
        }
      }
      if (dataFailure) throw dataFailure
    }
  }

  /** Answers the requests of the runs of a committed statement; a run whose key has no outcome is left to the batch's failure. */
  #settle(runs: Run[], outcomes: Map<string, KeyOutcome>): void {
    for (const run of runs) {
      const outcome = outcomes.get(run.key)
      if (outcome === undefined) continue
      if (outcome === null) {
        // Its sheet is unknown, or was disabled meanwhile.
        const error = new UnknownSheetError(run.delivery.sheet_id)
        for (const pending of run.waiting) this.#answer(pending, error)
        continue
      }
      run.waiting.forEach((pending, index) => this.#answer(pending, null, index === 0 ? outcome : { ...outcome, status: 'duplicate' }))
    }
  }
}

/** A delivery the database refused on its data: a 4xx, since a retry would be refused again. */
function refusedValue(error: unknown): AppError {
  return new AppError(400, 'invalid_parameter', `the store refused a value of this delivery: ${dataErrorMessage(error)}`)
}

/** Answers the requests of a committed statement. */
type Settlement = () => void
