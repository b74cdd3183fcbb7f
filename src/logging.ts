// Request ids and secrets in logs: each request's lines carry its id (`reqId`); Authorization-like
// headers and API-key fields are redacted, and a logged URL has the values of secret-looking query
// parameters replaced by [REDACTED]. No runtime dependency: the config loads it (src/logger.ts has
// the logger itself).
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { LogLevel } from 'fastify'

export const REQUEST_ID_HEADER = 'x-request-id'
export const REDACTED = '[REDACTED]'

// An incoming id is kept only if it is a short plain token: it goes into every log line and header.
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/
// Query parameters whose values are secrets: key, api_key, apiKey, access_token, secret, password, ...
// (`key` as a word only, so a tracker's `keyword` stays readable).
const SECRET_WORDS = 'token|secret|passw|auth|signature|credential|session'
const SECRET_PARAMETER = new RegExp(`(^|[^a-z])key($|[^a-z])|(api|private|access|secret)key|${SECRET_WORDS}`, 'i')
// A URL none of whose text could name a secret parameter (after decoding, which only '%' and '+'
// can change) is logged as it is, without looking at each name.
const MAYBE_SECRET = new RegExp(`key|${SECRET_WORDS}|[%+]`, 'i')

// Fields whose values are secrets, wherever a line includes them at its top or one level down
// (`apiKey`, `err.password`, `headers.authorization`, `req.headers.cookie`).
const SECRET_FIELDS = new Set(['apiKey', 'api_key', 'password'])
const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie', 'x-api-key']

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
  if (mark === -1 || !MAYBE_SECRET.test(url)) return url
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
  // Most names are plain: no decoding to pay for.
  if (name.indexOf('%') === -1 && name.indexOf('+') === -1) return name
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

/**
 * A log line's object with its secret fields' values replaced by [REDACTED]: SECRET_FIELDS and the
 * SECRET_HEADERS of a `headers` object, at the top and one level down. Objects are copied where
 * something is replaced (an error keeps its class, message and stack); the same object comes back
 * when nothing is. Pino's formatters.log hook: it runs on every line, before the serializers (whose
 * output carries no secrets: the request's URL is redacted by its serializer, headers are left out).
 * Pino's own `redact` did the same with wildcard paths (`*.headers.authorization`), which made it
 * walk every path for every field of every line: about 6 % of the receiver's CPU at `info`.
 */
export function redactSecrets(object: Record<string, unknown>): Record<string, unknown> {
  return redactFields(object, true)
}

function redactFields<T extends object>(object: T, descend: boolean): T {
  let copy: Record<string, unknown> | undefined
  for (const key in object) {
    // What their serializers write carries no secrets: the request's method, redacted URL, host
    // and address; the reply's status.
    if (descend && (key === 'req' || key === 'res')) continue
    const value = (object as Record<string, unknown>)[key]
    if (value === undefined || value === null) continue
    let redacted = value
    if (SECRET_FIELDS.has(key)) redacted = REDACTED
    else if (typeof value !== 'object') continue
    else if (key === 'headers') redacted = redactHeaders(value)
    else if (descend) redacted = redactFields(value, false)
    if (redacted === value) continue
    copy ??= copyOf(object)
    replace(copy, key, redacted)
  }
  return (copy as T | undefined) ?? object
}

// Defined rather than assigned: the field may be read-only in the copy (a frozen object's).
const replace = (object: Record<string, unknown>, key: string, value: unknown) =>
  Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true })

function redactHeaders(headers: object): object {
  let copy: Record<string, unknown> | undefined
  for (const name of SECRET_HEADERS) {
    if ((headers as Record<string, unknown>)[name] === undefined) continue
    copy ??= copyOf(headers)
    replace(copy, name, REDACTED)
  }
  return copy ?? headers
}

/** A shallow, extensible copy with the same prototype and own properties (an Error's message and stack too). */
function copyOf(object: object): Record<string, unknown> {
  if (Array.isArray(object)) return object.slice() as unknown as Record<string, unknown>
  const descriptors = Object.getOwnPropertyDescriptors(object)
  for (const [key, descriptor] of Object.entries(descriptors)) {
    // An accessor reads the original's internals (an Error's `stack` on Node.js 24): its value is copied.
    if (descriptor.get || descriptor.set) {
      descriptors[key] = { value: (object as Record<string, unknown>)[key], enumerable: descriptor.enumerable, writable: true, configurable: true }
    } else descriptor.configurable = true
  }
  return Object.create(Object.getPrototypeOf(object), descriptors)
}
