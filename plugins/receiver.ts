// The public postback receiver, GET /meta/postback/conversion: validates a network's delivery,
// hands it to the group-commit writer (plugins/ingest.ts) and answers only after the row is committed.
// Encapsulated: its hooks do not reach the management API.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { parseDelivery } from '../src/delivery.ts'
import { AppError, InputError } from '../src/errors.ts'
import type { ParsedQuery } from '../src/query-string.ts'
import { receiverRouteSchema, type Delivery } from '../src/schemas/receiver.ts'
import { isSheetId } from '../src/sheets.ts'
import { clientKey } from './rate-limit.ts'

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
  // A network sends from few addresses: the main limit is per sheet and address, so one busy
  // account cannot throttle a network's others; a coarse per-address limit stops floods. A sheet_id
  // that cannot name a sheet shares one key, so clients cannot make counters of their choosing.
  const rateLimit = app.limiter([
    { name: 'receiver_address', max: app.config.RECEIVER_FLOOD_LIMIT, key: clientKey },
    {
      name: 'receiver_sheet',
      max: app.config.RECEIVER_RATE_LIMIT,
      key: (request) => {
        const sheetId = (request.query as ParsedQuery).sheet_id
        return `${typeof sheetId === 'string' && isSheetId(sheetId) ? sheetId : '(invalid)'}|${clientKey(request)}`
      },
    },
  ])

  // Every rejection is counted and gets one log line; those of a delivery that names a sheet are
  // also kept for that sheet's diagnostics.
  app.addHook('onError', async (request, _reply, error) => {
    app.metrics.postbacks.inc({ outcome: 'rejected', reason: error instanceof AppError ? error.code : 'internal_error' })
    if (!(error instanceof AppError) || error.statusCode >= 500) return
    // A throttled flood is counted, not logged line by line nor kept in the sheet's rejection log,
    // where it would push out the diagnostics that matter.
    if (error.code === 'rate_limited') return
    request.log.info({ reason: error.code, parameter: error.parameter }, 'postback rejected')
    const sheetId = (request.query as ParsedQuery | undefined)?.sheet_id
    if (typeof sheetId !== 'string' || !isSheetId(sheetId)) return
    app.deliveryLog.recordRejection({
      sheetId,
      reason: error.code,
      parameter: error.parameter ?? null,
      rawQuery: rawQuery(request),
      remoteAddress: request.ip,
    })
  })

  app.get(
    '/meta/postback/conversion',
    {
      schema: receiverRouteSchema,
      validatorCompiler: () => validateDelivery,
      // No automatic HEAD route: a link checker's HEAD must not store a conversion.
      exposeHeadRoute: false,
      onRequest: rateLimit,
    },
    async (request) => {
      // The validator above turned the query into a checked Delivery.
      const delivery = request.query as unknown as Delivery
      const result = await app.conversionWriter.write(delivery)
      app.metrics.postbacks.inc({ outcome: result.status })
      if (result.status !== 'stored') app.deliveryLog.recordOutcome(delivery.sheet_id, result.status)
      if (result.status === 'updated') request.log.info({ conversionId: result.conversionId, conversionStatus: result.conversionStatus }, 'conversion updated')
      return { status: result.status, conversion_id: result.conversionId, conversion_status: result.conversionStatus }
    },
  )
}
