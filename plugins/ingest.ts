// The write side of the receiver, shared as `app.conversionWriter` (group commit) and
// `app.deliveryLog` (diagnostics), so that health, metrics and tests can see queue depth and
// drain them; batch sizes and write failures are counted in `app.metrics`. On close it answers
// what is queued before the store closes (it closes first, having been registered after the store).
import type { FastifyBaseLogger } from 'fastify'
import fp from 'fastify-plugin'
import { ChangeSignal } from '../src/changes.ts'
import { ConversionWriter } from '../src/conversion-writer.ts'
import { DeliveryLog } from '../src/delivery-log.ts'

declare module 'fastify' {
  interface FastifyInstance {
    conversionWriter: ConversionWriter
    deliveryLog: DeliveryLog
    /** Wakes the change feed's long polls when this instance commits a batch. */
    changeSignal: ChangeSignal
  }
}

export default fp(
  async function ingestPlugin(app) {
    const { config, metrics, prisma } = app
    const overload = overloadLog(app.log, config.RECEIVER_QUEUE_MAX)
    const changeSignal = new ChangeSignal()
    const writer = new ConversionWriter({
      query: (statement) => app.db.query(statement),
      batchMax: config.RECEIVER_BATCH_MAX,
      batchWaitMs: config.RECEIVER_BATCH_WAIT_MS,
      queueMax: config.RECEIVER_QUEUE_MAX,
      // PGlite is one connection; on PostgreSQL leave connections for reads.
      concurrency: app.db.kind === 'pglite' ? 1 : Math.max(1, Math.floor(config.DB_POOL_MAX / 2)),
      parallelAfterMs: config.RECEIVER_PARALLEL_AFTER_MS,
      retryAfterSeconds: config.RETRY_AFTER_SECONDS,
      onBatch: (size, error) => {
        metrics.batchSize.observe(size)
        // Also after a failure: part of a batch may have committed.
        changeSignal.notify()
        if (!error) return
        metrics.databaseErrors.inc({ operation: 'conversion_batch' })
        app.log.error({ err: error, size }, 'conversion batch failed')
      },
      onOverload: overload.refused,
    })
    const deliveryLog = new DeliveryLog({
      prisma,
      maxPerSheet: config.REJECTION_LOG_MAX_PER_SHEET,
      onError: (error) => {
        metrics.databaseErrors.inc({ operation: 'delivery_log' })
        app.log.warn({ err: error }, 'could not record delivery diagnostics')
      },
    })
    app.decorate('conversionWriter', writer)
    app.decorate('deliveryLog', deliveryLog)
    app.decorate('changeSignal', changeSignal)
    // Long polls answer at once when the app starts closing, so that they do not hold the close.
    app.addHook('preClose', async () => changeSignal.close())
    app.addHook('onClose', async () => {
      overload.close()
      await writer.drain()
      await deliveryLog.flush()
    })
  },
  { name: 'ingest', dependencies: ['db', 'metrics'] },
)

const OVERLOAD_LOG_INTERVAL_MS = 10_000

/**
 * Deliveries refused with 503 overloaded, logged in summary (each is also counted in the metrics):
 * a warn line at the first refusal, then every 10 s while refusals go on, the count since the last.
 */
function overloadLog(log: FastifyBaseLogger, queueMax: number) {
  let refused = 0
  let timer: NodeJS.Timeout | undefined
  const report = () => {
    timer = undefined
    if (refused === 0) return
    log.warn({ refused, queueMax }, `receiver overloaded: ${refused} deliveries refused with 503 in ${OVERLOAD_LOG_INTERVAL_MS / 1000} s`)
    refused = 0
    timer = setTimeout(report, OVERLOAD_LOG_INTERVAL_MS).unref()
  }
  return {
    refused() {
      if (timer) {
        refused++
        return
      }
      log.warn({ queueMax }, `receiver overloaded: RECEIVER_QUEUE_MAX=${queueMax} deliveries waiting; refusing more with 503`)
      timer = setTimeout(report, OVERLOAD_LOG_INTERVAL_MS).unref()
    },
    close() {
      clearTimeout(timer)
      report()
      clearTimeout(timer)
    },
  }
}
