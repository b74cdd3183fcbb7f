// The pg pool and client of the PostgreSQL store. pg reports its own client-side failures (no answer
// within the read timeout, a lost connection, no connection in time) as plain Errors known only by their
// text; here, where they leave the driver, they become StoreUnavailableError, so that every caller
// and the error handler classify storage errors by type and code, never by message.
import pg from 'pg'
import { StoreUnavailableError, type UnavailableReason } from './storage-errors.ts'

// The read timeout's failure (StorePool's watch): pg's own text for it.
const READ_TIMEOUT = 'Query read timeout'
// pg 8.16 (pg/lib/client.js, pg-pool/index.js): the failures that carry no code. Exact texts; a pg
// upgrade that changes one makes test/store/database-outage.ts fail.
const CLIENT_FAILURES = new Map<string, UnavailableReason>([
  [READ_TIMEOUT, 'timeout'],
  ['timeout exceeded when trying to connect', 'timeout'],
  ['Connection terminated due to connection timeout', 'timeout'],
  ['Connection terminated unexpectedly', 'connection_lost'],
  ['Connection terminated', 'connection_lost'],
  ['Client has encountered a connection error and is not queryable', 'connection_lost'],
  ['Client was closed and is not queryable', 'closed'],
  ['Cannot use a pool after calling end on the pool', 'closed'],
])

/** A failure of pg, typed: pg's callback forms give it as pg made it. */
export function typed(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof pg.DatabaseError || 'code' in error) return error
  const reason = CLIENT_FAILURES.get(error.message)
  return reason ? new StoreUnavailableError(reason, error) : error
}

/** A call of one of pg's overloaded methods: callback and stream forms pass through untouched, a promise's failure comes out typed. */
function typedCall(method: (...args: unknown[]) => unknown, self: unknown, args: unknown[]): unknown {
  const result = Reflect.apply(method, self, args)
  return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(typed(error))) : result
}

/**
 * A statement whose text begins with this comment runs without the pool's client-side read timeout
 * (StorePool's `readTimeoutMillis`): background work that may run for minutes (the first fold of the
 * rollups after an upgrade takes every row that shares the migration's transaction at once); its
 * transaction also lifts the server's `statement_timeout` (`SET LOCAL`, src/rollups.ts). Prisma's
 * adapter cannot pass per-query options; the text can.
 */
export const LONG_RUNNING = '/* long-running */'

export class StoreClient extends pg.Client {
  // Any arguments: pg's overloads pass through as they are.
  override query(...args: any[]): any {
    return typedCall(super.query, this, args)
  }
}

export interface StorePoolConfig extends pg.PoolConfig {
  /**
   * The client-side read timeout: a connection whose statement has had no answer for this long is
   * closed, and its statements fail as StoreUnavailableError('timeout'). It catches a database that
   * takes connections and never answers, where the server's `statement_timeout` cannot. Not pg's
   * `query_timeout`, whose timer and wrapping callback per statement made every scavenge of the
   * collector keep ~300 KB more under load: one watch per pool looks at each connection's
   * statement every quarter of a second instead (so a statement fails between the timeout and a
   * quarter of a second later). Statements that begin with LONG_RUNNING are not timed. A connection
   * that is closing (the server's close awaited) is timed too, so that the pool's end() ends.
   */
  readTimeoutMillis?: number
}

// pg's internals the watch reads: the statement a connection is running, those waiting for it (the
// first waits with none running while the connection waits for the server's ReadyForQuery after an
// error), whether it is closing (end(): Terminate sent, the server's close awaited), and its socket.
interface WatchedClient {
  activeQuery?: WatchedQuery | null
  queryQueue?: WatchedQuery[]
  _ending?: boolean
  connection: { stream: { destroy(error?: Error): void } }
}
interface WatchedQuery {
  text?: unknown
}
// What a closing connection waits for, timed like a statement.
const CLOSING: WatchedQuery = {}

export class StorePool extends pg.Pool {
  readonly #running = new Map<WatchedClient, { query: unknown; since: number }>()
  readonly #watch: NodeJS.Timeout | undefined

  constructor({ readTimeoutMillis, ...config }: StorePoolConfig) {
    super({ ...config, Client: StoreClient })
    if (!readTimeoutMillis) return
    this.on('connect', (client) => this.#running.set(client as unknown as WatchedClient, { query: undefined, since: 0 }))
    this.on('remove', (client) => this.#running.delete(client as unknown as WatchedClient))
    this.#watch = setInterval(() => this.#expire(readTimeoutMillis), Math.min(250, readTimeoutMillis / 4)).unref()
  }

  #expire(timeout: number): void {
    // Not stopped by end(): the pool ends once every client is back, and a hung one comes back
    // only by timing out.
    if (this.ended) clearInterval(this.#watch)
    const now = performance.now()
    for (const [client, seen] of this.#running) {
      const query = client.activeQuery ?? client.queryQueue?.[0] ?? (client._ending ? CLOSING : undefined)
      if (query !== seen.query) {
        seen.query = query
        seen.since = now
      } else if (query && now - seen.since >= timeout && !(typeof query.text === 'string' && query.text.startsWith(LONG_RUNNING))) {
        seen.query = undefined
        // pg fails the connection's statements with this error, emits it on the client (whoever holds
        // the client listens: pg-pool, the hot path, Prisma's transaction) and then closes it. A
        // connection closing (given back while the pool ends, say) against a server that never
        // closes it is closed here, without an error: the pool waits for it to end.
        client.connection.stream.destroy(query === CLOSING ? undefined : new Error(READ_TIMEOUT))
      }
    }
  }

  override query(...args: any[]): any {
    return typedCall(super.query, this, args)
  }

  override connect(...args: any[]): any {
    return typedCall(super.connect, this, args)
  }
}
