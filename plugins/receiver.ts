// The public postback receiver, GET /meta/postback/conversion: validates a network's delivery,
// group-commits it (src/conversion-writer.ts) and answers only after the row is committed.
// Encapsulated: its hooks do not reach the management API.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { ConversionWriter } from '../src/conversion-writer.ts'
import { parseDelivery } from '../src/delivery.ts'
import { AppError, InputError } from '../src/errors.ts'
import type { ParsedQuery } from '../src/query-string.ts'
import { RejectionLog } from '../src/rejection-log.ts'
import { receiverRouteSchema } from '../src/schemas/receiver.ts'

declare module 'fastify' {
  interface FastifyInstance {
    conversionWriter: ConversionWriter
    rejectionLog: RejectionLog
  }
}

/** Validation is the receiver's own (codes a network's log can show), over the documented schema. */
function validateDelivery(query: unknown) {
  try {
    return { value: parseDelivery(query as ParsedQuery) }
  } catch (error) {
    if (error instanceof InputError) return { error }
    throw error
  }
}

function rawQuery(request: FastifyRequest): string {
  const mark = request.url.indexOf('?')
  return mark === -1 ? '' : request.url.slice(mark + 1)
}

export default async function receiver(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { config, prisma } = app

  const writer = new ConversionWriter({
    prisma,
    batchMax: config.RECEIVER_BATCH_MAX,
    queueMax: config.RECEIVER_QUEUE_MAX,
    // PGlite is one connection; on PostgreSQL leave connections for reads.
    concurrency: app.db.kind === 'pglite' ? 1 : Math.max(1, Math.floor(config.DB_POOL_MAX / 2)),
    retryAfterSeconds: config.RETRY_AFTER_SECONDS,
    onBatch: (size, error) => {
      if (error) app.log.error({ err: error, size }, 'conversion batch failed')
    },
  })
  const rejectionLog = new RejectionLog({
    prisma,
    maxPerSheet: config.REJECTION_LOG_MAX_PER_SHEET,
    onError: (error) => app.log.warn({ err: error }, 'could not record rejected deliveries'),
  })
  app.decorate('conversionWriter', writer)
  app.decorate('rejectionLog', rejectionLog)
  // Children close before the prisma plugin: answer what is queued, then close the store.
  app.addHook('onClose', async () => {
    await writer.drain()
    await rejectionLog.flush()
  })

  // Rejections of a delivery that names a sheet are logged for that sheet's diagnostics.
  app.addHook('onError', async (request, _reply, error) => {
    if (!(error instanceof AppError) || error.statusCode >= 500) return
    const sheetId = (request.query as ParsedQuery | undefined)?.sheet_id
    if (typeof sheetId !== 'string' || sheetId === '') return
    request.log.info({ reason: error.code, parameter: error.parameter }, 'postback rejected')
    rejectionLog.record({
      sheetId,
      reason: error.code,
      parameter: error.parameter ?? null,
      rawQuery: rawQuery(request),
      remoteAddress: request.ip,
    })
  })

  app.get(
    '/meta/postback/conversion',
    { schema: receiverRouteSchema, validatorCompiler: () => validateDelivery },
    async (request) => {
      const result = await writer.write(request.query)
      return { status: result.status, conversion_id: result.conversionId }
    },
  )
}
