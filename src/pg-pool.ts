// The pg pool and client of the PostgreSQL store. pg reports its own client-side failures (no answer
// within query_timeout, a lost connection, no connection in time) as plain Errors known only by their
// text; here, where they leave the driver, they become StoreUnavailableError, so that every caller
// and the error handler classify storage errors by type and code, never by message.
import pg from 'pg'
import { StoreUnavailableError, type UnavailableReason } from './storage-errors.ts'

// pg 8.16 (pg/lib/client.js, pg-pool/index.js): the failures that carry no code. Exact texts; a pg
// upgrade that changes one makes test/store/database-outage.ts fail.
const CLIENT_FAILURES = new Map<string, UnavailableReason>([
  ['Query read timeout', 'timeout'],
  ['timeout exceeded when trying to connect', 'timeout'],
  ['Connection terminated due to connection timeout', 'timeout'],
  ['Connection terminated unexpectedly', 'connection_lost'],
  ['Connection terminated', 'connection_lost'],
  ['Client has encountered a connection error and is not queryable', 'connection_lost'],
  ['Client was closed and is not queryable', 'closed'],
  ['Cannot use a pool after calling end on the pool', 'closed'],
])

function typed(error: unknown): unknown {
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
 * (`query_timeout`): background work that may run for minutes (the first fold of the rollups after an
 * upgrade takes every row that shares the migration's transaction at once); its transaction also
 * lifts the server's `statement_timeout` (`SET LOCAL`, src/rollups.ts). Prisma's adapter cannot pass
 * pg per-query options; the text can.
 */
export const LONG_RUNNING = '/* long-running */'
// pg takes 0 as "the connection's default": the longest timer Node.js keeps instead (24.8 days).
const NO_READ_TIMEOUT = 2_147_483_647

function withoutReadTimeout(args: any[]): any[] {
  const [first, ...rest] = args
  if (typeof first === 'string' && first.startsWith(LONG_RUNNING)) {
    return [{ text: first, values: Array.isArray(rest[0]) ? rest[0] : undefined, query_timeout: NO_READ_TIMEOUT }, ...(Array.isArray(rest[0]) ? rest.slice(1) : rest)]
  }
  if (first && typeof first === 'object' && typeof first.text === 'string' && first.text.startsWith(LONG_RUNNING)) return [{ ...first, query_timeout: NO_READ_TIMEOUT }, ...rest]
  return args
}

export class StoreClient extends pg.Client {
  // Any arguments: pg's overloads pass through as they are.
  override query(...args: any[]): any {
    return typedCall(super.query, this, withoutReadTimeout(args))
  }
}

export class StorePool extends pg.Pool {
  constructor(config: pg.PoolConfig) {
    super({ ...config, Client: StoreClient })
  }

  override query(...args: any[]): any {
    return typedCall(super.query, this, args)
  }

  override connect(...args: any[]): any {
    return typedCall(super.connect, this, args)
  }
}
