// Classifies errors from the store. Prisma 7 reports a raw query's failure as P2010 with the driver's
// reason in `meta.driverAdapterError.cause`: a `kind` (DatabaseNotReachable, InvalidInputValue,
// postgres, ...) and, for errors the server raised, the SQLSTATE in `originalCode`.

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

/**
 * The store cannot take work now (unreachable, timed out, shutting down, read-only, out of
 * connections, a deadlock): the caller should retry later, so the answer is 503, not 500.
 */
export function isUnavailableError(error: unknown): boolean {
  const seen = new Set<unknown>()
  for (let current = error; current && typeof current === 'object' && !seen.has(current); current = (current as { cause?: unknown }).cause) {
    seen.add(current)
    const cause = adapterCause(current)
    if (cause?.kind && UNAVAILABLE_KINDS.has(cause.kind)) return true
    const state = sqlState(current)
    if (state && UNAVAILABLE_CLASSES.some((prefix) => state.startsWith(prefix))) return true
    const { code, name, message } = current as { code?: unknown; name?: unknown; message?: unknown }
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true
    if (name === 'PrismaClientInitializationError') return true
    if (typeof message === 'string' && /timeout exceeded when trying to connect|Connection terminated|PGlite is closed/i.test(message)) return true
  }
  return false
}
