// Logger and request-id settings for the app factory: pino JSON lines, each request's lines carrying
// its id (`reqId`), and secrets kept out: Authorization-like headers and API-key fields are redacted,
// and a logged URL has the values of secret-looking query parameters replaced by [REDACTED].
// Fastify logging: https://fastify.dev/docs/latest/Reference/Logging/
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { FastifyRequest, FastifyServerOptions, LogLevel } from 'fastify'
import type { Config } from './config.ts'

export const REQUEST_ID_HEADER = 'x-request-id'
export const REDACTED = '[REDACTED]'

// An incoming id is kept only if it is a short plain token: it goes into every log line and header.
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/
// Query parameters whose values are secrets: key, api_key, apiKey, access_token, secret, password, ...
// (`key` as a word only, so a tracker's `keyword` stays readable).
const SECRET_PARAMETER = /(^|[^a-z])key($|[^a-z])|(api|private|access|secret)key|token|secret|passw|auth|signature|credential|session/i

const SECRET_FIELDS = [
  'headers.authorization',
  'headers["proxy-authorization"]',
  'headers.cookie',
  'headers["set-cookie"]',
  'headers["x-api-key"]',
  'apiKey',
  'api_key',
  'password',
]
// Each secret field at the top of a log object and one level down (`req.headers.authorization`).
const REDACT_PATHS = [...SECRET_FIELDS, ...SECRET_FIELDS.map((path) => `*.${path}`)]

/** The request id: the caller's `x-request-id` when it is a sane short token, else a new UUID. */
export function requestId(request: IncomingMessage): string {
  const incoming = request.headers[REQUEST_ID_HEADER]
  return typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID()
}

export function isSecretParameter(name: string): boolean {
  return SECRET_PARAMETER.test(name)
}

/** The URL with the values of secret query parameters replaced; everything else is kept as sent. */
export function redactQueryValues(url: string): string {
  const mark = url.indexOf('?')
  if (mark === -1) return url
  const pairs = url
    .slice(mark + 1)
    .split('&')
    .map((pair) => {
      const equals = pair.indexOf('=')
      if (equals === -1) return pair
      const name = pair.slice(0, equals)
      return isSecretParameter(decodeName(name)) ? `${name}=${REDACTED}` : pair
    })
  return `${url.slice(0, mark)}?${pairs.join('&')}`
}

function decodeName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '))
  } catch {
    return name
  }
}

/**
 * The log level of routes that probes and scrapers call every few seconds (health, metrics): at
 * `info`, their request lines are left out; a route's level never makes the log more verbose.
 */
export function probeLogLevel(level: string): LogLevel {
  return level === 'info' ? 'warn' : (level as LogLevel)
}

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

/**
 * Logger and request-id options for Fastify. A caller's logger options (tests pass a `stream` to
 * capture lines) are merged over these, so redaction applies to them too.
 */
export function loggingOptions(
  level: Config['LOG_LEVEL'],
  logger?: FastifyServerOptions['logger'],
): Pick<FastifyServerOptions, 'logger' | 'genReqId'> {
  const defaults = {
    level,
    redact: { paths: REDACT_PATHS, censor: REDACTED },
    serializers: { req: serializeRequest },
  }
  return {
    logger: logger === undefined ? defaults : typeof logger === 'object' ? { ...defaults, ...logger } : logger,
    genReqId: requestId,
  }
}
