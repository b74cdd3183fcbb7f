// The one place that reads the environment. Every setting is declared once, in this TypeBox schema;
// the Config type is derived from it, and a bad value stops start-up naming the variable.
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { redactQueryValues } from './logging.ts'

const Port = (fallback: number, description: string) =>
  Type.Integer({ minimum: 0, maximum: 65535, default: fallback, description })

const Count = (fallback: number, minimum: number, maximum: number, description: string) =>
  Type.Integer({ minimum, maximum, default: fallback, description })

export const ConfigSchema = Type.Object({
  HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address to listen on' }),
  PORT: Port(3000, 'Port to listen on'),
  OPS_PORT: Type.Optional(
    Type.Integer({ minimum: 0, maximum: 65535, description: 'Port of a separate listener for /metrics and /docs (only there); unset: they are on PORT' }),
  ),
  OPS_HOST: Type.String({ minLength: 1, default: '127.0.0.1', description: 'Address of the OPS_PORT listener' }),
  DATABASE_URL: Type.Optional(
    Type.String({
      pattern: '^postgres(ql)?://',
      description: 'PostgreSQL connection URL; when unset, the embedded PGlite store in DATA_DIR is used',
    }),
  ),
  DATA_DIR: Type.String({ minLength: 1, default: './data', description: 'Folder of the embedded PGlite store' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info', description: 'Log level' },
  ),
  MIGRATE_ON_START: Type.Boolean({ default: true, description: 'Apply pending migrations at start-up' }),
  DB_POOL_MAX: Count(10, 1, 200, 'PostgreSQL connections per instance'),
  DB_CONNECT_TIMEOUT_MS: Count(5000, 100, 600_000, 'Longest wait for a PostgreSQL connection'),
  DB_STATEMENT_TIMEOUT_MS: Count(10_000, 100, 600_000, 'PostgreSQL statement timeout of requests (migrations have none)'),
  MIGRATION_LOCK_TIMEOUT_MS: Count(10_000, 100, 3_600_000, 'Longest a migration waits for a lock that another session holds before giving up'),
  RECEIVER_BATCH_MAX: Count(500, 1, 10_000, 'Most deliveries written by one batch statement'),
  RECEIVER_BATCH_WAIT_MS: Count(0, 0, 1000, 'Longest a delivery waits for others to join its batch while a connection is free (ms)'),
  RECEIVER_PARALLEL_AFTER_MS: Count(10, 0, 60_000, 'Batch statements run one at a time per instance while quick; another starts beside them once the newest has run this long (ms), up to DB_POOL_MAX / 2'),
  RECEIVER_QUEUE_MAX: Count(5000, 1, 1_000_000, 'Most deliveries waiting for a write; beyond it the receiver answers 503'),
  ROLLUP_FOLD_INTERVAL_MS: Count(1000, 10, 3_600_000, 'How often the summary rollups take in new changes (ms); the summary is exact either way, and reads fewer rows the fresher they are'),
  RETRY_AFTER_SECONDS: Count(5, 1, 3600, 'Retry-After sent with 503 answers'),
  PUBLIC_BASE_URL: Type.Optional(
    Type.String({
      pattern: '^https?://[^\\s?#]+$',
      description: 'Public base URL of the receiver, for the receiver URL builder; default http://HOST:PORT',
    }),
  ),
  RECEIVER_RATE_LIMIT: Count(6000, 1, 100_000_000, 'Receiver requests per minute per sheet and client address'),
  RECEIVER_FLOOD_LIMIT: Count(60_000, 1, 100_000_000, 'Requests per minute per client address: on the receiver over all sheets, on the management API before authentication'),
  MANAGEMENT_RATE_LIMIT: Count(600, 1, 100_000_000, 'Management API requests per minute per API key'),
  REDIS_URL: Type.Optional(
    Type.String({
      pattern: '^rediss?://',
      description: 'Redis URL: rate-limit counters shared by every instance; unset: counted per instance',
    }),
  ),
  REDIS_KEY_PREFIX: Type.String({ minLength: 1, default: 'postback-store:rate-limit:', description: 'Prefix of the Redis keys' }),
  TRUST_PROXY: Type.Optional(
    Type.String({
      pattern: '^[0-9A-Fa-f.:/]+(,[0-9A-Fa-f.:/]+)*$',
      description: 'Comma-separated addresses or CIDRs of trusted proxies (load balancers) whose X-Forwarded-For is believed',
    }),
  ),
  RECONCILE_BODY_MAX_BYTES: Count(256 * 1024 * 1024, 1024, 16 * 1024 * 1024 * 1024, 'Largest network export a reconcile request takes (bytes)'),
  RECONCILE_CONCURRENCY: Count(2, 1, 100, 'Reconcile requests one instance runs at once (on PostgreSQL each holds a connection of its own); more are answered 503'),
  RECONCILE_STATEMENT_TIMEOUT_MS: Count(300_000, 1000, 3_600_000, "PostgreSQL statement timeout of a reconcile request's statements (the CLI has none)"),
  REJECTION_LOG_MAX_PER_SHEET: Count(1000, 1, 1_000_000, 'Rejected deliveries kept per sheet'),
  SHEET_SECURITY_TTL_MS: Count(5000, 0, 600_000, "How long an instance keeps a sheet's secret and allow-list before reading them again (ms)"),
})

export type Config = Static<typeof ConfigSchema>

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Reads and validates settings from an environment map (process.env by default). */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const input: Record<string, unknown> = {}
  for (const [name, schema] of Object.entries(ConfigSchema.properties)) {
    const raw = env[name]
    if (raw === undefined || raw === '') continue
    input[name] = convert(name, raw, schema)
  }
  const value = Value.Default(ConfigSchema, input) as Record<string, unknown>
  const error = Value.Errors(ConfigSchema, value).First()
  if (error) {
    const name = error.path.replace(/^\//, '')
    const schema = (ConfigSchema.properties as Record<string, TSchema>)[name]
    throw new ConfigError(`${name}=${shown(name, env[name])} is not allowed: ${allowed(schema)}`)
  }
  if (value.OPS_PORT !== undefined && value.OPS_PORT !== 0 && value.OPS_PORT === value.PORT) {
    throw new ConfigError(`OPS_PORT=${value.OPS_PORT} is not allowed: a port other than PORT (${value.PORT}), for the separate operations listener`)
  }
  return value as Config
}

// Settings that may hold a password: their values are never printed whole.
const SECRET_SETTINGS = new Set(['DATABASE_URL', 'REDIS_URL'])

/** A setting's value for an error message: a URL's password replaced by ***; an unparseable secret setting not shown at all. */
function shown(name: string, raw: string | undefined): string {
  if (!SECRET_SETTINGS.has(name) || raw === undefined) return JSON.stringify(raw)
  const match = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)(.*)$/s.exec(raw)
  if (!match) return '(not shown: it may hold a password)'
  const [, scheme, rest] = match as unknown as [string, string, string]
  // The password is in the user info (up to the last @ before the query: a password may hold an
  // unencoded / or @) or in a query parameter (?password=).
  const queryStart = rest.search(/[?#]/)
  const authority = queryStart === -1 ? rest : rest.slice(0, queryStart)
  const at = authority.lastIndexOf('@')
  const userinfo = at === -1 ? '' : authority.slice(0, at)
  const user = userinfo.includes(':') ? `${userinfo.slice(0, userinfo.indexOf(':'))}:***@` : at === -1 ? '' : `${userinfo}@`
  return JSON.stringify(redactQueryValues(`${scheme}${user}${rest.slice(at + 1)}`))
}

function convert(name: string, raw: string, schema: TSchema): unknown {
  if (schema.type === 'integer') {
    if (!/^\d+$/.test(raw)) throw new ConfigError(`${name}=${JSON.stringify(raw)} is not allowed: ${allowed(schema)}`)
    return Number(raw)
  }
  if (schema.type === 'boolean') {
    if (raw === 'true' || raw === '1') return true
    if (raw === 'false' || raw === '0') return false
    throw new ConfigError(`${name}=${JSON.stringify(raw)} is not allowed: ${allowed(schema)}`)
  }
  return raw
}

function allowed(schema: TSchema | undefined): string {
  if (!schema) return 'unknown setting'
  if (schema.type === 'integer') return `a whole number from ${schema.minimum} to ${schema.maximum}`
  if (schema.type === 'boolean') return 'true or false'
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: TSchema) => s.const).join(', ')}`
  if (schema.pattern) return `${schema.description}, matching ${schema.pattern}`
  return 'a non-empty string'
}
