// Classifies errors from the store by type, kind and code, never by message text. Prisma 7 reports a
// raw query's failure as P2010 with the driver's reason in `meta.driverAdapterError.cause`: a `kind`
// (DatabaseNotReachable, InvalidInputValue, postgres, ...) and, for errors the server raised, the
// SQLSTATE in `originalCode`. Failures a driver reports only as text are typed where they leave it
// (StoreUnavailableError: src/pg-pool.ts for pg, src/database.ts for PGlite); Prisma passes those on
// as they are.

export type UnavailableReason = 'timeout' | 'connection_lost' | 'closed'

/** The store did not answer in time, lost the connection, or is closed. */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
  constructor(
    readonly reason: UnavailableReason,
    cause: Error,
  ) {
    super(cause.message, { cause })
  }
}

interface AdapterCause {
  kind?: string
  originalCode?: string
  code?: string
}

function adapterCause(error: unknown): AdapterCause | undefined {
  const meta = (error as { meta?: { driverAdapterError?: { cause?: AdapterCause } } } | null)?.meta
  return meta?.driverAdapterError?.cause
}

/** The SQLSTATE of an error the server raised, seen directly (pg, PGlite) or through Prisma. */
export function sqlState(error: unknown): string | undefined {
  const cause = adapterCause(error)
  if (cause) return cause.originalCode
  // pg and PGlite errors carry the SQLSTATE as `code`.
  const code = (error as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

/** A statement that failed on its data (SQLSTATE class 22 or 23): other rows of a batch may still succeed. */
export function isDataError(error: unknown): boolean {
  const state = sqlState(error)
  return state !== undefined && (state.startsWith('22') || state.startsWith('23'))
}

// Adapter error kinds that mean the connection, not the statement, failed.
const UNAVAILABLE_KINDS = new Set([
  'DatabaseNotReachable',
  'ConnectionClosed',
  'SocketTimeout',
  'TooManyConnections',
  'AuthenticationFailed',
  'DatabaseDoesNotExist',
  'DatabaseAccessDenied',
  'TlsConnectionError',
  'TransactionWriteConflict',
])
const UNAVAILABLE_CLASSES = ['08', '40', '53', '55', '57', '58', '25']
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN'])
// Prisma's own codes for an unreachable or timed-out server and an exhausted pool.
const PRISMA_CODES = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024'])

/**
 * The store cannot take work now (unreachable, timed out, shutting down, read-only, out of
 * connections, a deadlock): the caller should retry later, so the answer is 503, not 500.
 */
export function isUnavailableError(error: unknown): boolean {
  const seen = new Set<unknown>()
  for (let current = error; current && typeof current === 'object' && !seen.has(current); current = (current as { cause?: unknown }).cause) {
    seen.add(current)
    if (current instanceof StoreUnavailableError) return true
    const cause = adapterCause(current)
    if (cause?.kind && UNAVAILABLE_KINDS.has(cause.kind)) return true
    const state = sqlState(current)
    if (state && UNAVAILABLE_CLASSES.some((prefix) => state.startsWith(prefix))) return true
    const { code, name } = current as { code?: unknown; name?: unknown }
    if (typeof code === 'string' && (NETWORK_CODES.has(code) || PRISMA_CODES.has(code))) return true
    if (name === 'PrismaClientInitializationError') return true
  }
  return false
}

/** What the database said about a value it refused, for the answer: the server's message, without a driver's wrapping. */
export function dataErrorMessage(error: unknown): string {
  const cause = adapterCause(error) as (AdapterCause & { originalMessage?: string; message?: string }) | undefined
  const message = cause?.originalMessage ?? cause?.message ?? (error as { message?: unknown } | null)?.message
  return typeof message === 'string' ? message : 'a value the store cannot take'
}
