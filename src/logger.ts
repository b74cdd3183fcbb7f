// The app's logger (Fastify's pino options): JSON lines on stdout, buffered; each request's one
// access line; secrets redacted (src/logging.ts) in every line's logged fields.
// Fastify logging: https://fastify.dev/docs/latest/Reference/Logging/
import { LogController, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { fstatSync } from 'node:fs'
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
 * alone). What is left is written out when the process exits, also after an uncaught error; a
 * process killed outright (SIGKILL) loses at most the last quarter second of lines.
 *
 * A regular file is written in place: an asynchronous write goes through the thread pool, and
 * with both cores busy the hand-off cost the request path 4.4 to 4.9 µs a line against 0.7 to 1.0
 * written in place (100,000 lines at the receiver's pace beside two busy processes, the profile's
 * time in the write call). Anything else (a pipe or socket: a container's log collector; a
 * terminal, which can stop reading) is written asynchronously, so that a reader that stalls never
 * holds up requests.
 */
export function bufferedStdout(): ReturnType<typeof pino.destination> {
  if (stdout) return stdout
  const sync = writtenInPlace(1)
  const stream = pino.destination({ sync, minLength: 4096 })
  // Pino writes out an asynchronous destination's buffer at exit; a synchronous one's is ours to.
  if (sync) {
    // A failed write (a full disk) ends the process, as it does from an asynchronous write's
    // callback, instead of throwing from whichever log call wrote next.
    let failed = false
    stream.on('error', (error) => {
      failed = true
      process.nextTick(() => {
        throw error
      })
    })
    process.once('exit', () => {
      // sonic-boom's flushSync retries a failing write forever: not after a failure.
      if (failed) return
      try {
        stream.flushSync()
      } catch {
        // Nothing left to write to.
      }
    })
  }
  setInterval(() => {
    try {
      stream.flush()
    } catch {
      // A destroyed stdout (the reader went away) has nothing left to write to.
    }
  }, FLUSH_INTERVAL_MS).unref()
  return (stdout = stream)
}

/** Whether a file descriptor is a regular file: written without blocking for long. */
function writtenInPlace(fd: number): boolean {
  try {
    return fstatSync(fd).isFile()
  } catch {
    return false
  }
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
