// Prometheus metrics at GET /metrics: requests by route and status with latency, postbacks by outcome,
// the group-commit writer's batch sizes and queue depth, database errors, and process metrics.
// prom-client: https://github.com/siimon/prom-client
// One registry per app instance (never prom-client's global one), so several apps can live in one process.
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { AppError } from '../src/errors.ts'
import { probeLogLevel } from '../src/logging.ts'
import { isUnavailableError } from '../src/storage-errors.ts'

/** Where a database error happened: a request (a read), a receiver batch, the rejection log, the readiness check, an idle pooled connection. */
export type DatabaseOperation = 'request' | 'conversion_batch' | 'delivery_log' | 'readiness' | 'pool'

export interface Metrics {
  registry: Registry
  /** Receiver deliveries: `{ outcome: 'stored' | 'updated' | 'duplicate' }`, or `{ outcome: 'rejected', reason: <error code> }`. */
  postbacks: Counter<'outcome' | 'reason'>
  /** Deliveries per group-commit statement. */
  batchSize: Histogram
  databaseErrors: Counter<'operation'>
  /** Requests answered 429, by the limit they hit. */
  rateLimited: Counter<'limit'>
  /** Rate-limit checks that could not reach the shared store (Redis) and let the request through. */
  rateLimitStoreErrors: Counter
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

export default fp(
  async function metricsPlugin(app) {
    const registry = new Registry()
    const registers = [registry]
    collectDefaultMetrics({ register: registry })

    const requestDuration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP requests by method, route and status code, with their latency in seconds',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    const metrics: Metrics = {
      registry,
      postbacks: new Counter({
        name: 'postback_deliveries_total',
        help: 'Receiver deliveries by outcome (stored, updated, duplicate, rejected) and, for rejections, the reason (the error code)',
        labelNames: ['outcome', 'reason'],
        registers,
      }),
      batchSize: new Histogram({
        name: 'postback_batch_size',
        help: 'Deliveries written per group-commit statement',
        buckets: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000],
        registers,
      }),
      databaseErrors: new Counter({
        name: 'postback_database_errors_total',
        help: 'Database errors by operation: request, conversion_batch, delivery_log, readiness, pool',
        labelNames: ['operation'],
        registers,
      }),
      rateLimited: new Counter({
        name: 'postback_rate_limited_total',
        help: 'Requests answered 429, by limit: receiver_address, receiver_sheet, management_key',
        labelNames: ['limit'],
        registers,
      }),
      rateLimitStoreErrors: new Counter({
        name: 'postback_rate_limit_store_errors_total',
        help: 'Rate-limit checks that could not reach Redis; the request was let through',
        registers,
      }),
    }
    // Registered by its constructor; read through the registry, so it needs no name here.
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'postback_queue_depth',
      help: 'Deliveries waiting for, or in, a group-commit write',
      registers,
      collect() {
        // Read at scrape time: the ingest plugin decorates the writer after this plugin.
        this.set(app.hasDecorator('conversionWriter') ? app.conversionWriter.depth : 0)
      },
    })
    app.decorate('metrics', metrics)

    app.addHook('onResponse', (request, reply, done) => {
      // The route pattern, never the raw URL, so that labels stay few; unrouted requests share one.
      const route = request.routeOptions.url ?? 'unmatched'
      requestDuration.observe({ method: request.method, route, status_code: reply.statusCode }, reply.elapsedTime / 1000)
      done()
    })
    // Storage trouble met by a request (a management read, say). Typed errors are counted where
    // they arise (the writer's batch), so a failed batch is not counted again per request.
    app.addHook('onError', async (_request, _reply, error) => {
      if (!(error instanceof AppError) && isUnavailableError(error)) metrics.databaseErrors.inc({ operation: 'request' })
    })

    // Scraped every few seconds: its request lines are left out of the info-level log. An operations
    // route, not API: untagged, so the OpenAPI document leaves it out.
    app.get('/metrics', { logLevel: probeLogLevel(app.log.level) }, async (_request, reply) => {
      reply.type(registry.contentType)
      return registry.metrics()
    })
  },
  { name: 'metrics' },
)
