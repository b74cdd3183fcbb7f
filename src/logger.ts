// The app's logger (Fastify's pino options): JSON lines on stdout, buffered; each request's one
// access line; secrets redacted (src/logging.ts) in every line's logged fields.
// Fastify logging: https://fastify.dev/docs/latest/Reference/Logging/
import { LogController, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import pino from 'pino'
import type { Config } from './config.ts'
import { redactQueryValues, redactSecrets, requestId } from './logging.ts'

/** Fastify's request serializer, with the query's secrets redacted. */
function serializeRequest(request: FastifyRequest) {
  return {
    method: request.method,
    url: typeof request.url === 'string' ? redactQueryValues(request.url) : undefined,
    version: request.headers?.['accept-version'] as string | undefined,
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort,
  }
}

const FLUSH_INTERVAL_MS = 250
let stdout: ReturnType<typeof pino.destination> | undefined

/**
 * The process's stdout for log lines, buffered: lines are written in chunks of at least 4 KB, and
 * whatever is waiting at least every FLUSH_INTERVAL_MS, instead of one write(2) per line on the
 * request's path (one access line per request cost the receiver about 4.5 µs of CPU in writes
 * alone). Pino writes out what is left when the process exits, also after an uncaught error; a
 * process killed outright (SIGKILL) loses at most the last quarter second of lines.
 */
export function bufferedStdout(): ReturnType<typeof pino.destination> {
  if (stdout) return stdout
  const stream = pino.destination({ sync: false, minLength: 4096 })
  setInterval(() => {
    try {
      stream.flush()
    } catch {
      // A destroyed stdout (the reader went away) has nothing left to write to.
    }
  }, FLUSH_INTERVAL_MS).unref()
  return (stdout = stream)
}

/**
 * Each request's one line, `request completed` (or `request errored`), with the request, the
 * status and the time taken, written when it has been answered. Fastify's own `incoming request`
 * line is left out: two lines per request cost the receiver about a fifth of its throughput at
 * `info` (BENCHMARKS.md). Written with the request's logger, at its route's level (probes and
 * scrapes: warn at info).
 */
class AccessLog extends LogController {
  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (error) reply.log.error({ req: request, res: reply, err: error, responseTime: reply.elapsedTime }, 'request errored')
    else reply.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
  }
}

/**
 * Logger and request-id options for Fastify. A caller's logger options (tests pass a `stream` to
 * capture lines) are merged over these, so redaction applies to them too.
 */
export function loggingOptions(
  level: Config['LOG_LEVEL'],
  logger?: FastifyServerOptions['logger'],
): Pick<FastifyServerOptions, 'logger' | 'genReqId' | 'logController'> {
  const defaults = {
    level,
    // Not a child logger's bindings (pino formats only the root's): the app binds only request ids.
    formatters: { log: redactSecrets },
    serializers: { req: serializeRequest },
    stream: bufferedStdout(),
  }
  return {
    logger: logger === undefined ? defaults : typeof logger === 'object' ? { ...defaults, ...logger } : logger,
    genReqId: requestId,
    logController: new AccessLog(),
  }
}
