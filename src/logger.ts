// The app's logger (Fastify's pino options): JSON lines on stdout, buffered; each request's one
// access line; secrets redacted (src/logging.ts) in every line's logged fields.
// Fastify logging: https://fastify.dev/docs/latest/Reference/Logging/
import { LogController, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import { fstatSync, writeSync } from 'node:fs'
import { Socket } from 'node:net'
import { hostname } from 'node:os'
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

/** The serialized request as JSON, as JSON.stringify writes it (a field left undefined left out), in a third of its time. */
function requestJson(request: FastifyRequest): string {
  const { method, url, version, host, remoteAddress, remotePort } = serializeRequest(request)
  return (
    `{"method":${quoted(method)}` +
    (url === undefined ? '' : `,"url":${quoted(url)}`) +
    (version === undefined ? '' : `,"version":${quoted(version)}`) +
    (host === undefined ? '' : `,"host":${quoted(host)}`) +
    (remoteAddress === undefined ? '' : `,"remoteAddress":${quoted(remoteAddress)}`) +
    (remotePort === undefined ? '' : `,"remotePort":${remotePort}`) +
    '}'
  )
}

// What JSON.stringify escapes in a string: '"', '\\', control characters, and surrogates (a lone one).
// eslint-disable-next-line no-control-regex -- control characters are what it finds
const ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/

/** A string as JSON: quoted as it is when nothing in it needs escaping (a URL, a host, an address). */
function quoted(text: string): string {
  return ESCAPED.test(text) ? JSON.stringify(text) : `"${text}"`
}

const FLUSH_INTERVAL_MS = 250
// Lines are handed on in chunks of at most this many bytes (fewer when the timer or the exit flushes).
// Each hand-off to a pipe wakes its reader (and, written asynchronously, a pool thread), which
// preempt the main thread under load: 64 KB chunks cost a quarter of the hand-offs of 16 KB ones.
const CHUNK_BYTES = 64 * 1024
// How long the exit waits for a pipe's reader to take the last lines.
const EXIT_WRITE_MS = 2000
// How soon a pipe's reader is offered again what it had no room for, when no new chunk comes first.
const RETRY_MS = 5
// At most about this much waits in memory for a pipe's reader that lags; later chunks are dropped,
// and a warning line takes their place in the log (droppedWarning), instead of the heap growing
// until the process is killed.
const WAITING_LIMIT_BYTES = 32 * 1024 * 1024

type Destination = ReturnType<typeof pino.destination>

/** Where a ChunkedStdout hands its chunks of bytes. */
export interface ChunkSink {
  write(chunk: Buffer): unknown
  /** Calls `done` once everything handed on is written, or with the error that stopped the writing. */
  flush(done: (error?: Error) => void): void
}

/** What pino writes lines into: the process's stdout, buffered (`bufferedStdout`). */
export class ChunkedStdout {
  #chunk: Buffer
  #used = 0

  readonly sink: ChunkSink

  /** `sink`: a NonBlockingOut, or a pino destination (sonic-boom) with contentMode 'buffer', which takes bytes too. */
  constructor(
    sink: ChunkSink | Destination,
    private readonly chunkBytes: number,
  ) {
    this.sink = sink as ChunkSink
    this.#chunk = Buffer.allocUnsafe(chunkBytes)
  }

  /**
   * Gathers lines into one chunk of bytes and hands it on when full. Each line is encoded into the
   * chunk as it comes, so that it is garbage at once: gathered as a string (a rope of every line
   * until the chunk was handed on), each line outlived a young-generation collection or two and
   * was copied by it, and the chunk was flattened and encoded again to be written. sonic-boom's own
   * gathering (its `minLength`) measures the byte length of everything it holds at every write.
   */
  write(line: string): boolean {
    // At most 3 bytes a UTF-16 code unit: a line that might not fit hands on what is gathered.
    if (this.#used + 3 * line.length > this.chunkBytes) {
      this.#handOn()
      if (3 * line.length > this.chunkBytes) {
        this.sink.write(Buffer.from(line))
        return true
      }
    }
    this.#used += this.#chunk.write(line, this.#used)
    return true
  }

  /** Writes out what is waiting; `done` once it is written. */
  flush(done?: (error?: Error) => void): void {
    this.#handOn()
    if (done) this.sink.flush(done)
  }

  /** The bytes gathered and not yet handed on, taken out. */
  take(): Buffer {
    const bytes = this.#chunk.subarray(0, this.#used)
    // A new chunk: the sink may hold the old one until its write is done.
    if (this.#used > 0) this.#chunk = Buffer.allocUnsafe(this.chunkBytes)
    this.#used = 0
    return bytes
  }

  #handOn(): void {
    const bytes = this.take()
    // As bytes: given a string, sonic-boom measures its byte length, writes it, then encodes it
    // again to see what was written.
    if (bytes.length > 0) this.sink.write(bytes)
  }
}

// Bytes of log dropped by every NonBlockingOut of the process (the metric postback_log_dropped_bytes_total).
let droppedTotal = 0

/** Bytes of log lines this process has dropped because stdout's reader lagged past the limit (NonBlockingOut). */
export function logBytesDropped(): number {
  return droppedTotal
}

/**
 * Chunks written in place to a descriptor that does not block (a pipe or a socket, which libuv has
 * made non-blocking): write(2) on the caller's thread, no hand-off to the thread pool. What the
 * reader has no room for yet (EAGAIN, or the part of a chunk a write could not take) waits, in
 * order, and is offered again at the next chunk or after RETRY_MS: a reader that lags holds up
 * nothing but its own lines, and what is waiting is known to the byte, so that the exit writes
 * exactly the rest. Past `limitBytes` waiting, new chunks are dropped; one warning line stands
 * where they would have been (written before the next chunk kept, once what waited is written, or at
 * exit), with the bytes dropped. Any other failure (EPIPE: the reader is gone) stops the writing for
 * good and goes to `onError`.
 */
export class NonBlockingOut implements ChunkSink {
  #waiting: Buffer[] = []
  #waitingBytes = 0
  #dropped = 0
  #flushes: Array<(error?: Error) => void> = []
  #retry: NodeJS.Timeout | undefined
  #failed: Error | undefined

  constructor(
    readonly fd: number,
    private readonly onError: (error: Error) => void,
    private readonly limitBytes = WAITING_LIMIT_BYTES,
  ) {}

  write(chunk: Buffer): void {
    if (this.#failed) return
    // The reader is offered what waits first: the limit counts what it still has no room for, and
    // the chunk goes out now only if nothing waits before it.
    if (this.#waiting.length > 0) this.#writeWaiting()
    if (this.#failed) return
    const behind = this.#waiting.length > 0
    if (behind && this.#waitingBytes + chunk.length > this.limitBytes) {
      this.#dropped += chunk.length
      droppedTotal += chunk.length
      return
    }
    // Kept after a gap: the warning marks the gap, before it.
    if (this.#dropped > 0) this.#warn()
    this.#waiting.push(chunk)
    this.#waitingBytes += chunk.length
    // Behind others, the reader has just had no room: the retry timer offers it again.
    if (!behind) this.#writeWaiting()
    if (this.#waiting.length > 0) this.#keep()
  }

  flush(done: (error?: Error) => void): void {
    this.#writeWaiting()
    if (this.#failed || this.#waiting.length === 0) {
      const error = this.#failed
      process.nextTick(() => done(error))
    } else this.#flushes.push(done)
  }

  /** What is still waiting, taken out, with the warning of what was dropped (the exit writes it itself). */
  take(): Buffer[] {
    clearTimeout(this.#retry)
    this.#retry = undefined
    if (this.#dropped > 0) this.#warn()
    const rest = this.#waiting.splice(0)
    this.#waitingBytes = 0
    return rest
  }

  #writeWaiting(): void {
    for (;;) {
      if (this.#waiting.length === 0) {
        if (this.#dropped === 0) break
        // The reader has taken everything that waited: it hears what it missed.
        this.#warn()
      }
      const chunk = this.#waiting[0]!
      let written: number
      try {
        written = writeSync(this.fd, chunk)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EAGAIN') {
          // Unref'd: a process with nothing else to do goes on to its exit, which writes the rest.
          this.#retry ??= setTimeout(() => {
            this.#retry = undefined
            this.#writeWaiting()
          }, RETRY_MS).unref()
          return
        }
        this.#failed = error as Error
        this.take()
        this.onError(this.#failed)
        this.#called(this.#failed)
        return
      }
      this.#waitingBytes -= written
      if (written < chunk.length) this.#waiting[0] = chunk.subarray(written)
      else this.#waiting.shift()
    }
    this.#called()
  }

  /**
   * What waits holds its own bytes: a chunk handed on by a flush (a line or two) is a view of a
   * 64 KB buffer, and a reader stalled for hours would keep one of those per quarter second.
   */
  #keep(): void {
    const last = this.#waiting.length - 1
    const chunk = this.#waiting[last]!
    if (chunk.buffer.byteLength > 2 * chunk.length) this.#waiting[last] = Buffer.from(chunk)
  }

  /** The warning of the chunks dropped since the last one, in line where they would have been. */
  #warn(): void {
    const warning = droppedWarning(this.#dropped, this.limitBytes)
    this.#dropped = 0
    this.#waiting.push(warning)
    this.#waitingBytes += warning.length
  }

  // Flush callbacks run on a later tick, never inside the log call whose chunk ended the wait.
  #called(error?: Error): void {
    for (const done of this.#flushes.splice(0)) process.nextTick(done, error)
  }
}

/** The line that says how much of the log a stalled reader missed: a warning, as pino writes one. */
function droppedWarning(bytes: number, limitBytes: number): Buffer {
  return Buffer.from(
    `{"level":40,"time":${Date.now()},"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"droppedBytes":${bytes}` +
      `,"msg":"log lines dropped here: stdout's reader lagged while ${limitBytes} bytes of lines waited for it"}\n`,
  )
}

let stdout: ChunkedStdout | undefined

/**
 * The process's stdout for log lines, buffered: lines are written in chunks of CHUNK_BYTES, and
 * whatever is waiting at least every FLUSH_INTERVAL_MS, instead of one write(2) per line on the
 * request's path (one access line per request cost the receiver about 4.5 µs of CPU in writes
 * alone). What is left is written out when the process exits, also after an uncaught error; a
 * process killed outright (SIGKILL) loses the last quarter second of lines, and what a lagging
 * pipe's reader had no room for; at exit such a reader is waited for up to EXIT_WRITE_MS, and no
 * longer. While a reader lags, about WAITING_LIMIT_BYTES of what it has no room for waits in memory
 * at most; past that, lines are dropped and a warning stands in their place (NonBlockingOut).
 *
 * A regular file is written in place: an asynchronous write goes through the thread pool, and with
 * both cores busy the hand-off cost the request path 4.4 to 4.9 µs a line against 0.7 to 1.0
 * written in place (100,000 lines at the receiver's pace beside two busy processes, the profile's
 * time in the write call). A pipe or a socket (a container's log collector) is written in place
 * too, without blocking (NonBlockingOut). Asynchronous writes into a pipe through sonic-boom, as
 * before, lost lines at exit (a chunk partly written when the reader lagged was passed over by
 * pino's exit flush) and made the exit wait for as long as the reader did. Anything else (a
 * terminal, which can stop reading; a device) is written asynchronously.
 */
export function bufferedStdout(): ChunkedStdout {
  if (stdout) return stdout
  // A failed write (a full disk, a reader gone) ends the process: from a synchronous write, instead
  // of throwing from whichever log call wrote next.
  let failed = false
  const fail = (error: Error) => {
    failed = true
    process.nextTick(() => {
      throw error
    })
  }
  const kind = stdoutKind()
  const file = kind === 'file'
  let sink: NonBlockingOut | Destination
  if (kind === 'stream') sink = new NonBlockingOut(1, fail)
  else {
    // Each chunk is written at once (a minLength of 0 would make flush() call back before an
    // asynchronous write is done).
    const stream = pino.destination({ sync: file, minLength: 1, contentMode: 'buffer' })
    stream.on('error', (error) => {
      // pino's exit handler would retry the failing write forever (sonic-boom's flushSync retries
      // EBADF and EPIPE too): nothing more is written.
      stream.flushSync = () => {}
      fail(error)
    })
    sink = stream
  }
  const chunked = new ChunkedStdout(sink, CHUNK_BYTES)
  // When the event loop empties, what is gathered is handed on, so that the process ends once it
  // is written.
  process.prependListener('beforeExit', () => chunked.flush())
  // At exit (after pino's own exit handler has written out what an asynchronous destination holds:
  // it registered with pino.destination, before this) the lines still waiting here, written
  // directly (writeOutSync): a NonBlockingOut's waiting bytes first, then the gathered chunk.
  process.once('exit', () => {
    const rest = sink instanceof NonBlockingOut ? Buffer.concat([...sink.take(), chunked.take()]) : chunked.take()
    if (!failed && rest.length > 0) writeOutSync(1, rest, EXIT_WRITE_MS)
  })
  setInterval(() => {
    try {
      chunked.flush()
    } catch {
      // A destroyed stdout (the reader went away) has nothing left to write to.
    }
  }, FLUSH_INTERVAL_MS).unref()
  return (stdout = chunked)
}

/**
 * What stdout is (by public calls; until 2026-12-01 by the class of process.stdout's private
 * `_handle`): a regular file, written in place without blocking for long; a pipe or a stream socket
 * (a FIFO, a Unix or TCP socket), which Node.js opens as a net.Socket when process.stdout is first
 * asked for (asked here), making the descriptor non-blocking (libuv's uv_pipe_open, uv_tcp_open): a
 * write that the reader has no room for then fails with EAGAIN instead of waiting for it; or
 * anything else (a terminal, a device; a datagram socket, which Node.js neither opens as a stream
 * nor makes non-blocking: written in place, a write into it would wait for its reader for as long
 * as it takes).
 */
function stdoutKind(): 'file' | 'stream' | 'other' {
  let stat
  try {
    stat = fstatSync(1)
  } catch {
    return 'other'
  }
  if (stat.isFile()) return 'file'
  return (stat.isFIFO() || stat.isSocket()) && process.stdout instanceof Socket ? 'stream' : 'other'
}

/**
 * Writes all of `bytes` to `fd` before returning, also when only part of it goes at a time, or the
 * descriptor is a non-blocking pipe whose reader lags (EAGAIN: waits a little and tries again, for
 * up to `waitMs` in all). Any other failure loses the rest of the bytes, not the caller's exit.
 * Returns the bytes written.
 */
export function writeOutSync(fd: number, bytes: Buffer, waitMs: number): number {
  const deadline = Date.now() + waitMs
  const pause = new Int32Array(new SharedArrayBuffer(4))
  let written = 0
  while (written < bytes.length) {
    try {
      written += writeSync(fd, bytes, written)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN' || Date.now() >= deadline) break
      Atomics.wait(pause, 0, 0, 5)
    }
  }
  return written
}

const { streamSym, chindingsSym, formattersSym } = pino.symbols

type Internals = Record<symbol, unknown>

/**
 * Each request's logger, with the app's own logger options: what pino's `child({ reqId })` makes,
 * put together directly (an object on the parent with the request id in its bindings, already JSON,
 * and the formatters pino gives every child, taken from one child it made). Fastify asks pino for
 * `child(bindings, {})`, and an options object, even empty, sends pino down its general path
 * (serializers, formatters rebuilt, level and redaction checks, the bindings through its
 * serializer): about 2 µs a request in the receiver's profile. Route options (a route's log level)
 * still go to pino. A test compares every line a request writes with pino's.
 */
function requestLogger(logger: pino.Logger, bindings: pino.Bindings, options: pino.ChildLoggerOptions): pino.Logger {
  const id = bindings.reqId as unknown
  // eslint-disable-next-line no-unreachable-loop -- any option at all goes to pino
  for (const _ in options) return logger.child(bindings, options)
  if (typeof id !== 'string') return logger.child(bindings, options)
  let template = childTemplates.get(logger)
  if (template === undefined) childTemplates.set(logger, (template = logger.child({})))
  const child = Object.create(logger) as Internals
  child[formattersSym] = (template as unknown as Internals)[formattersSym]
  child[chindingsSym] = `${(logger as unknown as Internals)[chindingsSym] as string},"reqId":${quoted(id)}`
  return child as unknown as pino.Logger
}
const childTemplates = new WeakMap<pino.Logger, pino.Logger>()

/**
 * Each request's one line, `request completed` (or `request errored`), with the request, the
 * status and the time taken, written when it has been answered. Fastify's own `incoming request`
 * line is left out: two lines per request cost the receiver about a fifth of its throughput at
 * `info` (BENCHMARKS.md). Written with the request's logger, at its route's level (probes and
 * scrapes: warn at info).
 *
 * With the app's own logger options (a caller may set only the level and the stream) the
 * `request completed` line is put together here, as pino would write it: the same fields in the
 * same order (a test compares the two; the time taken to the microsecond), for a third of pino's cost (its serializers, formatters
 * and generic JSON for every field: about 2 µs a line on the receiver's path).
 */
class AccessLog extends LogController {
  constructor(private readonly byHand: boolean) {
    super()
  }

  override incomingRequest(): void {}

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    const log = reply.log as pino.Logger
    if (error) log.error({ req: request, res: reply, err: error, responseTime: toMicros(reply.elapsedTime) }, 'request errored')
    else if (!this.byHand) log.info({ req: request, res: reply, responseTime: toMicros(reply.elapsedTime) }, 'request completed')
    else if (log.isLevelEnabled('info')) {
      // The level and time as pino's defaults write them; the bindings (pid, hostname, reqId) as
      // pino keeps them, already JSON.
      const internals = log as unknown as Internals
      const stream = internals[streamSym] as { write(line: string): void }
      stream.write(
        `{"level":30,"time":${Date.now()}${internals[chindingsSym] as string}` +
          `,"req":${requestJson(request)},"res":{"statusCode":${reply.statusCode}}` +
          `,"responseTime":${millisJson(reply.elapsedTime)},"msg":"request completed"}\n`,
      )
    }
  }
}

/** A duration in ms rounded to the microsecond, as every access line writes it. */
const toMicros = (ms: number) => Math.round(ms * 1000) / 1000

/**
 * A duration in ms as JSON, to the microsecond ("19.879", where the unrounded double is
 * 19.878717999999935): by integers only, as a double's shortest text took V8 about 0.3 µs in a
 * loop (0.5 µs a request on the receiver's path, by perf). Not finite: null, as JSON.stringify
 * writes it; negative, or past 2^53 µs (no duration of a request): JSON.stringify's text.
 */
export function millisJson(ms: number): string {
  const micros = Math.round(ms * 1000)
  if (!Number.isSafeInteger(micros) || micros < 0) return JSON.stringify(Number.isFinite(ms) ? ms : null)
  const fraction = micros % 1000
  return `${(micros - fraction) / 1000}.${fraction < 10 ? '00' : fraction < 100 ? '0' : ''}${fraction}`
}

/**
 * Logger and request-id options for Fastify. A caller's logger options (tests pass a `stream` to
 * capture lines) are merged over these, so redaction applies to them too.
 */
export function loggingOptions(
  level: Config['LOG_LEVEL'],
  logger?: FastifyServerOptions['logger'],
): Pick<FastifyServerOptions, 'logger' | 'genReqId' | 'logController' | 'childLoggerFactory'> {
  const defaults = {
    level,
    // Not a child logger's bindings (pino formats only the root's): the app binds only request ids.
    formatters: { log: redactSecrets },
    serializers: { req: serializeRequest },
    stream: bufferedStdout(),
  }
  // Any other option (a formatter, a message key, a timestamp) could change how pino writes a line;
  // a stream that takes each line's level beside it (pino.multistream) needs pino to write it.
  const own = logger === undefined ? {} : typeof logger === 'object' ? (logger as { stream?: Record<symbol, unknown> }) : undefined
  const ownFormat = own !== undefined && Object.keys(own).every((key) => key === 'level' || key === 'stream') && !own.stream?.[pino.symbols.needsMetadataGsym]
  return {
    logger: logger === undefined ? defaults : typeof logger === 'object' ? { ...defaults, ...logger } : logger,
    genReqId: requestId,
    logController: new AccessLog(ownFormat),
    ...(ownFormat ? { childLoggerFactory: requestLogger as unknown as FastifyServerOptions['childLoggerFactory'] } : {}),
  }
}
