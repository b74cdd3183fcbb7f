// Rate limits with @fastify/rate-limit (https://github.com/fastify/fastify-rate-limit). Registered
// once with no global hook; the receiver and the management plugins take limiters from
// `app.limiter(...)` for their own keys, and answers carry the plugin's x-ratelimit-* headers. With
// REDIS_URL the counters live in Redis (through our own ioredis client) and are shared by every
// instance; when Redis fails, requests are let through, logged and counted.
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import { AppError } from '../src/errors.ts'

const WINDOW_MS = 60_000
// The plugin's default header names (its `addHeaders` option), which our limiters set themselves.
const LIMIT_HEADER = 'x-ratelimit-limit'
const REMAINING_HEADER = 'x-ratelimit-remaining'
const RESET_HEADER = 'x-ratelimit-reset'

/** A client address as a counter key: an IPv6 client counts by its /64, as one host usually holds one. */
export function clientKey(request: FastifyRequest): string {
  const ip = request.ip
  // An IPv4 address (no colon) is its own key: normalizeIP's IPv6 test is a long regular expression.
  return ip.indexOf(':') === -1 ? ip : normalizeIP(ip, 64)
}

export interface LimiterOptions {
  /** What is limited, for metrics and messages: `receiver_sheet`, `receiver_address`, `management_key`. */
  name: string
  /** Requests per minute per key. */
  max: number
  /** The counter's key; requests of one key share the limit. Keep it short and not client-chosen. */
  key: (request: FastifyRequest) => string
}

declare module 'fastify' {
  interface FastifyInstance {
    /**
     * An onRequest hook that counts a request against the limits, shows the one closest to being reached
     * in x-ratelimit-* headers (also across several hooks of one request), and answers 429 with
     * Retry-After once the request is over any of them.
     */
    limiter: (limits: LimiterOptions[]) => (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

export default fp(
  async function rateLimitPlugin(app) {
    const { config, metrics } = app
    let lastWarned = 0
    let storeDown = false
    // Throttled: a Redis outage must not flood the log.
    function warnStoreDown(error: unknown): void {
      storeDown = true
      if (Date.now() - lastWarned < 10_000) return
      lastWarned = Date.now()
      app.log.warn({ err: error }, 'rate-limit store (Redis) unavailable; requests are let through')
    }
    let redis: Redis | undefined
    if (config.REDIS_URL) {
      redis = new Redis(config.REDIS_URL, {
        // Fail fast while Redis is away instead of queueing commands: a request waits for it at
        // most commandTimeout; a silent dead socket is dropped after socketTimeout and reconnected.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        connectTimeout: 1000,
        commandTimeout: 500,
        socketTimeout: 2000,
        keepAlive: 1000,
        lazyConnect: false,
      })
      redis.on('error', (error) => warnStoreDown(error))
      redis.on('ready', () => {
        if (!storeDown) return
        storeDown = false
        app.log.info('rate-limit store (Redis) reachable again; limits are enforced')
      })
      app.addHook('onClose', async () => {
        redis?.disconnect()
      })
      // Start with the connection up when Redis answers, so the first requests are counted too;
      // a Redis that is down does not hold up start-up (its checks are skipped until it is back).
      const connected = once(redis, 'ready').then(
        () => true,
        () => false,
      )
      const timeout = new AbortController()
      const up = await Promise.race([connected, delay(1500, false, { signal: timeout.signal }).catch(() => false)])
      timeout.abort()
      if (!up) app.log.warn('rate-limit store (Redis) not reachable at start-up; limits are not enforced until it is')
    }
    await app.register(fastifyRateLimit, {
      global: false,
      timeWindow: WINDOW_MS,
      // A store error reaches our hook, which lets the request through: the plugin's own skipOnError
      // would hide it, and the request would look counted.
      skipOnError: false,
      ...(redis ? { redis, nameSpace: config.REDIS_KEY_PREFIX } : {}),
    })

    app.decorate('limiter', function limiter(limits: LimiterOptions[]) {
      const checks = limits.map(({ name, max, key }) => ({
        name,
        max,
        check: app.createRateLimit({ max, timeWindow: WINDOW_MS, keyGenerator: (request) => `${name}:${key(request)}` }),
      }))
      // The limits of a request are checked in parallel: a slow store costs one wait, not one per limit.
      return async function rateLimitHook(request: FastifyRequest, reply: FastifyReply) {
        const results = await Promise.all(
          checks.map(({ check }) =>
            check(request).catch((error: unknown) => {
              metrics.rateLimitStoreErrors.inc()
              warnStoreDown(error)
              return undefined
            }),
          ),
        )
        let refusal: { name: string; max: number; ttlInSeconds: number } | undefined
        for (const [index, result] of results.entries()) {
          // Not counted (the store failed): no header claims a count.
          if (!result || result.isAllowed) continue
          showLimit(reply, result)
          // Over several limits, the one that frees up last says when to retry.
          if (result.isExceeded && result.ttlInSeconds >= (refusal?.ttlInSeconds ?? 0)) {
            refusal = { name: checks[index]!.name, max: result.max, ttlInSeconds: result.ttlInSeconds }
          }
        }
        if (!refusal) return
        const retryAfter = Math.max(1, refusal.ttlInSeconds)
        reply.header(LIMIT_HEADER, refusal.max).header(REMAINING_HEADER, 0).header(RESET_HEADER, retryAfter).header('retry-after', retryAfter)
        metrics.rateLimited.inc({ limit: refusal.name })
        throw new AppError(429, 'rate_limited', `rate limit of ${refusal.max} requests per minute exceeded; retry in ${retryAfter} s`)
      }
    })
  },
  { name: 'rate-limit', dependencies: ['config', 'metrics'] },
)

/** Shows a counted limit unless the answer already shows one (of this hook or an earlier one) with fewer requests left. */
function showLimit(reply: FastifyReply, limit: { max: number; remaining: number; ttlInSeconds: number }): void {
  const shown = reply.getHeader(REMAINING_HEADER)
  if (shown !== undefined && Number(shown) <= limit.remaining) return
  reply.header(LIMIT_HEADER, limit.max).header(REMAINING_HEADER, limit.remaining).header(RESET_HEADER, limit.ttlInSeconds)
}
