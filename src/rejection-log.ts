// The bounded log of rejected deliveries, kept for known sheets only, so "my network sends but
// nothing shows" has an answer. It is diagnostics, not data: entries are buffered and written in
// the background (a flood of bad requests costs one statement per batch, never a wait in the
// answer), the buffer is capped, and each sheet keeps only its newest entries.
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'

export interface Rejection {
  sheetId: string
  reason: string
  parameter: string | null
  rawQuery: string
  remoteAddress: string | null
}

export interface RejectionLogOptions {
  prisma: PrismaClient
  maxPerSheet: number
  /** Entries buffered before new ones are dropped (and counted). */
  bufferMax?: number
  flushIntervalMs?: number
  onError?: (error: unknown) => void
}

const RAW_QUERY_MAX = 2048

export class RejectionLog {
  readonly #options: Required<Omit<RejectionLogOptions, 'onError'>> & Pick<RejectionLogOptions, 'onError'>
  #buffer: Rejection[] = []
  #timer: NodeJS.Timeout | undefined
  #writing: Promise<void> = Promise.resolve()
  dropped = 0

  constructor(options: RejectionLogOptions) {
    this.#options = { bufferMax: 10_000, flushIntervalMs: 250, ...options }
  }

  record(rejection: Rejection): void {
    if (this.#buffer.length >= this.#options.bufferMax) {
      this.dropped++
      return
    }
    this.#buffer.push({ ...rejection, rawQuery: rejection.rawQuery.slice(0, RAW_QUERY_MAX) })
    this.#timer ??= setTimeout(() => void this.flush(), this.#options.flushIntervalMs)
  }

  /** Writes what is buffered; resolves when it (and any write before it) is done. */
  flush(): Promise<void> {
    clearTimeout(this.#timer)
    this.#timer = undefined
    const entries = this.#buffer.splice(0)
    this.#writing = this.#writing.then(() => (entries.length ? this.#write(entries) : undefined))
    return this.#writing
  }

  async #write(entries: Rejection[]): Promise<void> {
    const { prisma, maxPerSheet } = this.#options
    const column = <K extends keyof Rejection>(name: K) => entries.map((entry) => entry[name])
    try {
      // Joined with sheets: deliveries naming an unknown sheet are not kept.
      await prisma.$executeRaw(Prisma.sql`
        INSERT INTO delivery_rejections (sheet_id, reason, parameter, raw_query, remote_address)
        SELECT r.sheet_id, r.reason, r.parameter, r.raw_query, r.remote_address
        FROM unnest(${column('sheetId')}::text[], ${column('reason')}::text[], ${column('parameter')}::text[],
                    ${column('rawQuery')}::text[], ${column('remoteAddress')}::text[])
             WITH ORDINALITY AS r(sheet_id, reason, parameter, raw_query, remote_address, ord)
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
    } catch (error) {
      this.dropped += entries.length
      this.#options.onError?.(error)
    }
  }
}
