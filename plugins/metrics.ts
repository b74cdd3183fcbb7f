// Prometheus metrics at GET /metrics: requests by route and status with latency, postbacks by outcome,
// the group-commit writer's batch sizes and queue depth, database errors, log bytes dropped, and process metrics.
// prom-client: https://github.com/siimon/prom-client
// One registry per app instance (never prom-client's global one), so several apps can live in one process.
import fp from 'fastify-plugin'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import { AppError } from '../src/errors.ts'
import { logBytesDropped } from '../src/logger.ts'
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

/** The request histogram's bucket bounds, in seconds. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

interface DurationSeries {
  labels: { method: string; route: string; status_code: number }
  /** Per bucket, the requests that took at most its bound and more than the one before. */
  counts: number[]
  sum: number
  count: number
}

/**
 * `http_request_duration_seconds`, the requests by method, route and status with their latency, a
 * Prometheus histogram written out as prom-client writes its own: prom-client's Histogram turns a
 * labels object into a string key at every observation (0.4 µs a request in a loop, and a fortieth
 * of the receiver's allocations); here a request finds its series through three map lookups and
 * allocates nothing once the series exists.
 */
export class RequestDurations {
  readonly name = 'http_request_duration_seconds'
  readonly help = 'HTTP requests by method, route and status code, with their latency in seconds'
  readonly type = 'histogram'
  readonly aggregator = 'sum'
  // By route, method, then status code.
  readonly #series = new Map<string, Map<string, Map<number, DurationSeries>>>()

  observe(method: string, route: string, statusCode: number, seconds: number): void {
    let byMethod = this.#series.get(route)
    if (byMethod === undefined) this.#series.set(route, (byMethod = new Map()))
    let byStatus = byMethod.get(method)
    if (byStatus === undefined) byMethod.set(method, (byStatus = new Map()))
    let series = byStatus.get(statusCode)
    if (series === undefined) {
      series = { labels: { method, route, status_code: statusCode }, counts: DURATION_BUCKETS.map(() => 0), sum: 0, count: 0 }
      byStatus.set(statusCode, series)
    }
    for (let bucket = 0; bucket < DURATION_BUCKETS.length; bucket++) {
      if (seconds <= DURATION_BUCKETS[bucket]!) {
        series.counts[bucket]!++
        break
      }
    }
    series.sum += seconds
    series.count++
  }

  /** The samples, as prom-client's Histogram gives them to its registry: cumulative buckets, +Inf, sum, count. */
  get() {
    const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = []
    for (const byMethod of this.#series.values()) {
      for (const byStatus of byMethod.values()) {
        for (const { labels, counts, sum, count } of byStatus.values()) {
          let below = 0
          DURATION_BUCKETS.forEach((bound, bucket) => {
            below += counts[bucket]!
            values.push({ metricName: `${this.name}_bucket`, labels: { le: bound, ...labels }, value: below })
          })
          values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...labels }, value: count })
          values.push({ metricName: `${this.name}_sum`, labels, value: sum }, { metricName: `${this.name}_count`, labels, value: count })
        }
      }
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }

  reset(): void {
    this.#series.clear()
  }
}

export default fp(
  async function metricsPlugin(app) {
    const registry = new Registry()
    const registers = [registry]
    collectDefaultMetrics({ register: registry })

    const requestDuration = new RequestDurations()
    registry.registerMetric(requestDuration as unknown as Histogram)
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
    // Read at scrape time from the log's stdout (process-wide): a reader that lagged past the limit
    // lost lines, and the warning line that marks the gap is in the log that may not be read.
    // eslint-disable-next-line no-new
    new Counter({
      name: 'postback_log_dropped_bytes_total',
      help: "Bytes of log lines dropped because stdout's reader (a pipe, a socket) lagged with about 32 MB of lines waiting for it",
      registers,
      collect() {
        this.reset()
        const dropped = logBytesDropped()
        if (dropped > 0) this.inc(dropped)
      },
    })
    app.decorate('metrics', metrics)

    app.addHook('onResponse', (request, reply, done) => {
      // The route pattern, never the raw URL, so that labels stay few; unrouted requests share one.
      const route = request.routeOptions.url ?? 'unmatched'
      requestDuration.observe(request.method, route, reply.statusCode, reply.elapsedTime / 1000)
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
