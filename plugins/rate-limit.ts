// Rate limits. The receiver and the management plugins take limiters from `app.limiter(...)` for
// their own keys, and answers carry x-ratelimit-* headers. With REDIS_URL the counters live in Redis
// through @fastify/rate-limit (https://github.com/fastify/fastify-rate-limit; registered once with
// no global hook, on our own ioredis client) and are shared by every instance; when Redis fails,
// requests are let through, logged and counted. Without it each instance counts in its own memory
// (`LocalCounters`: the plugin's local store's windows, a store per limit, keys not counted lately
// dropped first beyond capacity), checked synchronously: the plugin's check
// (several awaits per limit, then one for both) cost the receiver 6 to 10 µs of CPU a delivery,
// about a tenth of what the floor of its design spends (BENCHMARKS.md, "Receiver efficiency").
import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit'
import type { FastifyError, FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
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
    limiter: (limits: LimiterOptions[]) => onRequestHookHandler
  }
}

/** A limit's count for a request: as @fastify/rate-limit's check answers. */
interface Counted {
  max: number
  remaining: number
  ttlInSeconds: number
  isExceeded: boolean
}

/**
 * One limit's per-instance counters, as @fastify/rate-limit's local store keeps them: a key's window
 * starts at its first request and lasts WINDOW_MS; at most `capacity` keys. When a new key needs
 * room, the oldest keys go whose window has ended or that were not counted since they came or were
 * last passed over here (a "second chance" order, close to least recently used): a key in use, a
 * flooding address, is never the one dropped, and keys of one limit never push out another's (each
 * limit has its own). A count moves no key: moving the key on every count (a Map delete and set)
 * made V8 rebuild a small Map's table every few requests, 5 µs a request in the receiver's profile.
 */
export class LocalCounters {
  // In the order keys came, or were last given a second chance.
  private readonly windows = new Map<string, { count: number; endsAt: number; counted: boolean }>()

  constructor(private readonly capacity = 10_000) {}

  count(key: string, max: number, now = Date.now()): Counted {
    let window = this.windows.get(key)
    if (window === undefined) {
      if (this.windows.size >= this.capacity) this.makeRoom(now)
      window = { count: 0, endsAt: now + WINDOW_MS, counted: false }
      this.windows.set(key, window)
    } else {
      window.counted = true
      if (window.endsAt <= now) {
        window.count = 0
        window.endsAt = now + WINDOW_MS
      }
    }
    window.count++
    return { max, remaining: Math.max(0, max - window.count), ttlInSeconds: Math.ceil((window.endsAt - now) / 1000), isExceeded: window.count > max }
  }

  get size(): number {
    return this.windows.size
  }

  // The ended windows among the oldest, and at least one key: the oldest not counted since it came
  // or was last passed over here; one that was is passed over once, to the back.
  private makeRoom(now: number): void {
    for (const [key, window] of this.windows) {
      if (window.endsAt > now) {
        if (this.windows.size < this.capacity) break
        if (window.counted) {
          window.counted = false
          this.windows.delete(key)
          this.windows.set(key, window)
          continue
        }
      }
      this.windows.delete(key)
    }
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
    if (redis) {
      await app.register(fastifyRateLimit, {
        global: false,
        timeWindow: WINDOW_MS,
        // A store error reaches our hook, which lets the request through: the plugin's own skipOnError
        // would hide it, and the request would look counted.
        skipOnError: false,
        redis,
        nameSpace: config.REDIS_KEY_PREFIX,
      })
    }

    /** Answers 429 for the limit a request is over, if any, after showing the closest one in headers. */
    function decide(reply: FastifyReply, names: string[], results: Array<Counted | undefined>): void {
      let closest: Counted | undefined
      let refusal: { name: string; max: number; ttlInSeconds: number } | undefined
      for (let index = 0; index < results.length; index++) {
        const result = results[index]
        // Not counted (the store failed): no header claims a count.
        if (!result) continue
        // The first of those with the fewest requests left: the headers are written once.
        if (!closest || result.remaining < closest.remaining) closest = result
        // Over several limits, the one that frees up last says when to retry.
        if (result.isExceeded && result.ttlInSeconds >= (refusal?.ttlInSeconds ?? 0)) {
          refusal = { name: names[index]!, max: result.max, ttlInSeconds: result.ttlInSeconds }
        }
      }
      if (closest) showLimit(reply, closest)
      if (!refusal) return
      const retryAfter = Math.max(1, refusal.ttlInSeconds)
      reply.header(LIMIT_HEADER, refusal.max).header(REMAINING_HEADER, 0).header(RESET_HEADER, retryAfter).header('retry-after', retryAfter)
      metrics.rateLimited.inc({ limit: refusal.name })
      throw new AppError(429, 'rate_limited', `rate limit of ${refusal.max} requests per minute exceeded; retry in ${retryAfter} s`)
    }

    // Per limit name, as the plugin keeps a store per limit.
    const local = new Map<string, LocalCounters>()
    app.decorate('limiter', function limiter(limits: LimiterOptions[]): onRequestHookHandler {
      const names = limits.map(({ name }) => name)
      if (!redis) {
        const counters = limits.map(({ name }) => local.get(name) ?? local.set(name, new LocalCounters()).get(name)!)
        return function localRateLimitHook(request, reply, done) {
          const now = Date.now()
          try {
            decide(
              reply,
              names,
              limits.map(({ max, key }, index) => counters[index]!.count(key(request), max, now)),
            )
          } catch (error) {
            return done(error as FastifyError)
          }
          done()
        }
      }
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
        decide(
          reply,
          names,
          results.map((result) => (result && !result.isAllowed ? result : undefined)),
        )
      }
    })
  },
  { name: 'rate-limit', dependencies: ['config', 'metrics'] },
)

/** Shows a counted limit unless the answer already shows one (of an earlier limiter hook of the request) with fewer requests left. */
function showLimit(reply: FastifyReply, limit: { max: number; remaining: number; ttlInSeconds: number }): void {
  const shown = reply.getHeader(REMAINING_HEADER)
  if (shown !== undefined && Number(shown) <= limit.remaining) return
  reply.header(LIMIT_HEADER, limit.max).header(REMAINING_HEADER, limit.remaining).header(RESET_HEADER, limit.ttlInSeconds)
}
