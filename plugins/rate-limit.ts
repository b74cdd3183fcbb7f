// Rate limits with @fastify/rate-limit (https://github.com/fastify/fastify-rate-limit). Registered
// once with no global hook; the receiver and the management plugins take limiters from
// `app.limiter(...)` for their own keys. With REDIS_URL the counters live in Redis and are shared by
// every instance; when Redis fails, requests are let through (skipOnError), logged and counted.
import fastifyRateLimit from '@fastify/rate-limit'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import fp from 'fastify-plugin'
import { Redis } from 'ioredis'
import { AppError } from '../src/errors.ts'

const WINDOW_MS = 60_000

export interface LimiterOptions {
  /** What is limited, for metrics and messages: `receiver_sheet`, `receiver_address`, `management_key`. */
  name: string
  /** Requests per minute per key. */
  max: number
  /** The counter's key; requests of one key share the limit. */
  key: (request: FastifyRequest) => string
}

declare module 'fastify' {
  interface FastifyInstance {
    /** An onRequest hook that answers 429 with Retry-After once a key is over its limit. */
    limiter: (options: LimiterOptions) => (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}

export default fp(
  async function rateLimitPlugin(app) {
    const { config, metrics } = app
    let redis: Redis | undefined
    if (config.REDIS_URL) {
      let lastLogged = 0
      redis = new Redis(config.REDIS_URL, {
        // Fail fast while Redis is away instead of queueing commands: a request never waits for it.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        connectTimeout: 1000,
        commandTimeout: 500,
        lazyConnect: false,
      })
      redis.on('error', (error) => {
        if (Date.now() - lastLogged < 10_000) return
        lastLogged = Date.now()
        app.log.warn({ err: error }, 'rate-limit store (Redis) unavailable; requests are let through')
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
      const up = await Promise.race([connected, delay(1500).then(() => false)])
      if (!up) app.log.warn('rate-limit store (Redis) not reachable at start-up; limits are not enforced until it is')
    }
    await app.register(fastifyRateLimit, {
      global: false,
      timeWindow: WINDOW_MS,
      skipOnError: true,
      ...(redis ? { redis, nameSpace: config.REDIS_KEY_PREFIX } : {}),
    })

    app.decorate('limiter', function limiter({ name, max, key }: LimiterOptions) {
      const check = app.createRateLimit({ max, timeWindow: WINDOW_MS, keyGenerator: (request) => `${name}:${key(request)}` })
      return async function rateLimitHook(request: FastifyRequest, reply: FastifyReply) {
        const result = await check(request)
        if (result.isAllowed) return
        // Every counted request makes its key's count at least 1; a count of 0 (remaining === max)
        // means the store failed and skipOnError let the request through.
        if (result.remaining === result.max) metrics.rateLimitStoreErrors.inc()
        if (!result.isExceeded) return
        const retryAfter = Math.max(1, result.ttlInSeconds)
        metrics.rateLimited.inc({ limit: name })
        reply.header('retry-after', String(retryAfter))
        throw new AppError(429, 'rate_limited', `rate limit of ${max} requests per minute exceeded; retry in ${retryAfter} s`)
      }
    })
  },
  { name: 'rate-limit', dependencies: ['config', 'metrics'] },
)
