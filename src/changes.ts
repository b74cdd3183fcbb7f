// The change feed: every stored conversion and every status move, each exactly once, for consumers
// that keep their own copy (GET /api/v1/postback/changes).
//
// Why not time, or the ids: both are taken while a batch is written, and batches commit out of that
// order (several statements in flight on each instance, several instances), so a reader that follows
// either from its last position skips a row that commits after a later one was read. The feed orders
// by what commit visibility can vouch for instead:
// - Every change carries a key: the id (xid8) of the transaction that wrote it (the `stored_key`
//   of a conversion row, the `change_key` of a move in its history).
// - A reader returns only changes whose key is below the xmin of its own snapshot: every transaction
//   with an id below it has ended, so those changes are all visible, and no transaction still running
//   or yet to start can write a key below it. The changes below the horizon are final; a page past
//   the last position never misses one that commits later (it had a larger key, so it comes later).
// - A move's key is the larger of its transaction id and its conversion's previous key (trigger
//   conversions_change_key): a batch whose transaction id was taken before another batch stored the
//   conversion can move it after that commits, and the move must still come after the insert.
// The order is (key, inserts before moves, id). A write transaction that stays open holds the
// horizon, and so every later change, back until it ends: on PostgreSQL any write transaction on the
// server (PGlite runs one at a time). The receiver's are one statement each.
import { setTimeout as sleep } from 'node:timers/promises'
import { InputError } from './errors.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import { toConversion, type SheetScope } from './conversions.ts'
import type { Change, ChangeQuery, ChangePage } from './schemas/management.ts'

/** How often a long poll reads again when no local commit wakes it (commits on other instances). */
export const FEED_POLL_MS = 250
/** The least time between two reads of one long poll: a busy instance commits hundreds of batches a second. */
const FEED_MIN_READ_MS = 50

// A position: the last change seen, as "key.kind.id" (kind 0 for an insert, 1 for a move; id of the
// conversion or of the history entry).
interface Position {
  key: bigint
  kind: 0 | 1
  id: bigint
}

const START: Position = { key: 0n, kind: 0, id: 0n }
const MAX_BIGINT = (1n << 63n) - 1n
const MAX_XID8 = (1n << 64n) - 1n

export const encodePosition = ({ key, kind, id }: Position): string => `${key}.${kind}.${id}`

export function decodePosition(text: string): Position {
  const match = /^(\d{1,20})\.([01])\.(\d{1,19})$/.exec(text)
  const position = match && { key: BigInt(match[1]!), kind: Number(match[2]) as 0 | 1, id: BigInt(match[3]!) }
  if (!position || position.key > MAX_XID8 || position.id > MAX_BIGINT) {
    throw new InputError('invalid_parameter', 'after', 'after is not a position of this feed (pass `next` of the previous page)')
  }
  return position
}

const later = (a: Position, b: Position) => a.key !== b.key ? a.key > b.key : a.kind !== b.kind ? a.kind > b.kind : a.id > b.id

interface ChangeRow {
  horizon: string
  key: string | null
  kind: 0 | 1 | null
  change_id: string | null
  id_text: string
  sheet_id: string
  transaction_id: string
  payout_text: string | null
  currency_text: string
  campaign_id: string | null
  adset_id: string | null
  ad_id: string | null
  event: string | null
  status: Change['conversion']['status']
  network_status: string | null
  received_at: Date
  updated_at: Date | null
}

/** One page of the feed after `after`, in feed order, and the position to pass next. */
export async function readChanges(prisma: PrismaClient, scope: SheetScope, after: Position, limit: number): Promise<{ changes: Change[]; next: Position }> {
  const inScope = (alias: string) => (scope === null ? Prisma.sql`true` : Prisma.sql`${Prisma.raw(alias)}.sheet_id = ANY(${[...scope]}::text[])`)
  const key = Prisma.sql`${after.key.toString()}::xid8`
  // Past the position: inserts at its key only after an insert, moves at its key after any insert.
  const insertId = after.kind === 0 ? after.id : MAX_BIGINT
  const moveId = after.kind === 1 ? after.id : 0n
  // One statement, so that the horizon is the xmin of the snapshot the rows are read in. Inserts and
  // moves are each read in key order from their (key, id) index, at most `limit` of each, then merged.
  // A scoped key filters as it reads: a page reads past other sheets' changes, and a short page moves
  // `next` to the horizon, so a follower reads each index entry about once. The horizon is a scalar
  // subquery so that it bounds the index scan (as a join filter, a feed held back by an open
  // transaction would read every newer entry on every poll).
  const rows = await prisma.$queryRaw<ChangeRow[]>(Prisma.sql`
    WITH horizon AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),
    inserts AS (
      SELECT c.stored_key AS key, 0 AS kind, c.id AS change_id, c.id
      FROM conversions c
      WHERE ${inScope('c')} AND (c.stored_key, c.id) > (${key}, ${insertId.toString()}::bigint) AND c.stored_key < (SELECT xmin FROM horizon)
      ORDER BY c.stored_key, c.id LIMIT ${limit}
    ),
    moves AS (
      SELECT h.change_key AS key, 1 AS kind, h.id AS change_id, h.conversion_id AS id
      FROM conversion_history h
      WHERE ${inScope('h')} AND (h.change_key, h.id) > (${key}, ${moveId.toString()}::bigint) AND h.change_key < (SELECT xmin FROM horizon)
      ORDER BY h.change_key, h.id LIMIT ${limit}
    ),
    page AS (
      SELECT * FROM (SELECT * FROM inserts UNION ALL SELECT * FROM moves) p ORDER BY key, kind, change_id LIMIT ${limit}
    )
    SELECT horizon.xmin::text AS horizon, p.key::text AS key, p.kind, p.change_id::text AS change_id,
      c.id::text AS id_text, c.sheet_id, c.transaction_id, NULLIF(c.event, '') AS event, c.campaign_id, c.adset_id, c.ad_id,
      s.status, s.network_status, s.payout::text AS payout_text, s.currency::text AS currency_text, c.received_at, s.updated_at
    FROM horizon
    LEFT JOIN page p ON true
    LEFT JOIN conversions c ON c.id = p.id
    -- The conversion as the change left it: a move's entry; for an insert, the row, or the first
    -- entry of its history once it has moved.
    LEFT JOIN LATERAL (
      SELECT h.status, h.network_status, h.payout, h.currency, CASE WHEN p.kind = 1 THEN h.recorded_at END AS updated_at
      FROM conversion_history h
      WHERE c.updated_at IS NOT NULL AND h.conversion_id = c.id AND (CASE WHEN p.kind = 1 THEN h.id = p.change_id ELSE h.change_key IS NULL END)
      UNION ALL
      SELECT c.status, c.network_status, c.payout, c.currency, NULL WHERE c.updated_at IS NULL
    ) s ON true
    ORDER BY p.key, p.kind, p.change_id`)
  const changes: Change[] = []
  let last = after
  for (const { horizon, key, kind, change_id, ...row } of rows) {
    if (key === null) continue
    last = { key: BigInt(key), kind: kind!, id: BigInt(change_id!) }
    changes.push({ position: encodePosition(last), kind: kind === 0 ? 'stored' : 'updated', conversion: toConversion(row) })
  }
  const horizon: Position = { key: BigInt(rows[0]!.horizon), kind: 0, id: 0n }
  // A short page read everything in scope below the horizon: the next starts there (every change
  // still to come has a key at or above it). A full page goes on from its last change.
  const next = changes.length === limit ? last : later(horizon, after) ? horizon : after
  return { changes, next }
}

/** Wakes long polls when this instance commits a batch; they also read again every FEED_POLL_MS. */
export class ChangeSignal {
  #waiters = new Set<() => void>()
  #closed = false

  notify(): void {
    for (const wake of this.#waiters) wake()
    this.#waiters.clear()
  }

  /** Resolves at the next notify, after `ms`, or at once when closed or aborted. */
  async wait(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#closed || signal?.aborted) return
    const woken = new AbortController()
    const wake = () => woken.abort()
    this.#waiters.add(wake)
    signal?.addEventListener('abort', wake, { once: true })
    try {
      await sleep(ms, undefined, { signal: woken.signal }).catch(() => {})
    } finally {
      this.#waiters.delete(wake)
      signal?.removeEventListener('abort', wake)
    }
  }

  /** Ends every wait, now and later: the app is closing and long polls answer at once. */
  close(): void {
    this.#closed = true
    this.notify()
  }

  get closed(): boolean {
    return this.#closed
  }
}

/**
 * A page of the feed; when it is empty and `wait` > 0, holds on until a change is readable, `wait`
 * seconds pass, the client goes away (`signal`) or the app closes.
 */
export async function changesPage(
  prisma: PrismaClient,
  changeSignal: ChangeSignal,
  scope: SheetScope,
  query: ChangeQuery,
  signal?: AbortSignal,
): Promise<ChangePage> {
  let after = query.after === undefined ? START : decodePosition(query.after)
  const limit = query.limit ?? 100
  const deadline = performance.now() + (query.wait ?? 0) * 1000
  for (;;) {
    const readAt = performance.now()
    const { changes, next } = await readChanges(prisma, scope, after, limit)
    const remaining = deadline - performance.now()
    if (changes.length > 0 || remaining <= 0 || changeSignal.closed || signal?.aborted) return { data: changes, next: encodePosition(next) }
    // Nothing in scope up to the horizon: read on from there.
    after = next
    await changeSignal.wait(Math.min(FEED_POLL_MS, remaining), signal)
    const since = performance.now() - readAt
    if (since < FEED_MIN_READ_MS) await sleep(Math.min(FEED_MIN_READ_MS - since, Math.max(0, deadline - performance.now())))
  }
}
