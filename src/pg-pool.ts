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

export class StoreClient extends pg.Client {
  // Any arguments: pg's overloads pass through as they are.
  override query(...args: any[]): any {
    return typedCall(super.query, this, args)
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
