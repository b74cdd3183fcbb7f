// The public postback receiver, GET /meta/postback/conversion: validates a network's delivery,
// hands it to the group-commit writer (plugins/ingest.ts) and answers only after the row is committed.
// Encapsulated: its hooks do not reach the management API.
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { parseDelivery, parseTestFlag } from '../src/delivery.ts'
import { isUnavailableError } from '../src/storage-errors.ts'
import { AppError, InputError, UnknownSheetError } from '../src/errors.ts'
import type { ParsedQuery } from '../src/query-string.ts'
import { receiverRouteSchema, type Delivery, type DeliveryAccepted } from '../src/schemas/receiver.ts'
import { checkDelivery, type SheetSecurity } from '../src/sheet-security.ts'
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

declare module 'fastify' {
  interface FastifyRequest {
    /** A test postback (`test=1`; a malformed flag counts as one); set before validation. */
    postbackTest: boolean
  }
}

/**
 * The answer to a delivery the writer took (DeliveryAccepted), which the route's serializer writes as
 * JSON by hand: its two statuses are words of fixed sets and its id is a bigint's digits, so nothing
 * in it needs escaping. JSON.stringify took about 0.4 µs a delivery in a loop (1.1 µs on the
 * receiver's path, by perf).
 */
export class Accepted implements DeliveryAccepted {
  constructor(
    readonly status: DeliveryAccepted['status'],
    readonly conversion_id: string,
    readonly conversion_status: DeliveryAccepted['conversion_status'],
  ) {}
}

/** The route's serializer: an Accepted by hand, anything else (a test's answer, an error's body) by JSON.stringify. */
export function serializeAnswer(payload: unknown): string {
  if (!(payload instanceof Accepted)) return JSON.stringify(payload)
  return `{"status":"${payload.status}","conversion_id":"${payload.conversion_id}","conversion_status":"${payload.conversion_status}"}`
}

function rawQuery(request: FastifyRequest): string {
  const mark = request.url.indexOf('?')
  return mark === -1 ? '' : request.url.slice(mark + 1)
}

const CLOSE_WAIT_MS = 10_000

export default async function receiver(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.decorateRequest('postbackTest', false)
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
    // Storage trouble that reached here untyped (the sheet-settings read, say) is answered 503 by the
    // error handler, and counted as such.
    const reason = error instanceof AppError ? error.code : isUnavailableError(error) ? 'storage_unavailable' : 'internal_error'
    app.metrics.postbacks.inc({ outcome: 'rejected', reason })
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
      test: request.postbackTest,
    })
    if (request.postbackTest) app.deliveryLog.recordTest(sheetId, error.code)
  })

  // Settings reads under way (the cache's). On close they finish first, with the writer and the
  // store still open (this scope's onClose runs before theirs): a delivery still reading its sheet's
  // settings when the shutdown starts goes on, in the same turn as the read's answer, to the writer,
  // which stores and answers what it holds before it closes. Only the reads are waited for: a hook on
  // every request (an onRequest and an onResponse) cost the common case, whose sheet settings are
  // cached, for nothing.
  app.addHook('onClose', async () => {
    let timer: NodeJS.Timeout | undefined
    // A read that never answers must not hold the shutdown forever.
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))
    await Promise.race([app.sheetSecurity.settled(), timeout])
    clearTimeout(timer)
  })

  const security = app.sheetSecurity
  const refusal = (settings: SheetSecurity | null, request: FastifyRequest): Error | undefined => {
    if (!settings) return undefined
    try {
      checkDelivery(settings, (request.query as ParsedQuery).token, request.ip, Date.now())
    } catch (error) {
      return error as Error
    }
    return undefined
  }
  // Before the parameters are checked, so that a caller without the secret learns nothing about
  // them. A sheet whose settings are cached is checked without waiting; the batch statement still
  // decides whether a sheet exists (the cache may be up to SHEET_SECURITY_TTL_MS old).
  function checkSheetSecurity(request: FastifyRequest, _reply: FastifyReply, done: HookHandlerDoneFunction): void {
    const query = request.query as ParsedQuery
    const sheetId = query.sheet_id
    let test: boolean
    try {
      test = parseTestFlag(query.test)
    } catch (error) {
      request.postbackTest = true
      return done(error as Error)
    }
    request.postbackTest = test
    if (typeof sheetId !== 'string' || !isSheetId(sheetId)) return done()
    const cached = security.cached(sheetId)
    if (cached !== undefined) return done(refusal(cached, request) ?? (test && !cached?.active ? new UnknownSheetError(sheetId) : undefined))
    security.load(sheetId).then(
      (settings) => done(refusal(settings, request) ?? (test && !settings?.active ? new UnknownSheetError(sheetId) : undefined)),
      (error: Error) => done(error),
    )
  }

  app.get(
    '/meta/postback/conversion',
    {
      schema: receiverRouteSchema,
      validatorCompiler: () => validateDelivery,
      // The answers are this route's and the error handler's own objects, with only the documented
      // fields: plain JSON writes them as the schema says. fast-json-stringify checked every 200
      // against the union's branches with ajv to pick one (about 1 µs a delivery).
      serializerCompiler: () => serializeAnswer,
      // No automatic HEAD route: a link checker's HEAD must not store a conversion.
      exposeHeadRoute: false,
      // Both checks in one stage: the query is parsed before onRequest, and a preValidation stage of
      // its own cost each request Fastify's hook runner a second time (about 0.3 µs).
      onRequest: [rateLimit, checkSheetSecurity],
    },
    (request, reply) => {
      // The validator above turned the query into a checked Delivery.
      const delivery = request.query as unknown as Delivery
      if (request.postbackTest) {
        // Every check passed (sheet, secret, address, parameters, status mapping): nothing is stored.
        app.metrics.postbacks.inc({ outcome: 'test' })
        app.deliveryLog.recordTest(delivery.sheet_id, 'ok')
        reply.send({ status: 'test' as const, conversion_status: delivery.status ?? 'approved' })
        return
      }
      // Answered from the writer's callback once the delivery's statement has committed (or failed).
      app.conversionWriter.submit(delivery, (error, result) => {
        // An error goes to the error handler, as one thrown by the handler would.
        const untyped = reply as FastifyReply
        if (error) {
          untyped.send(error)
          return
        }
        const { status, conversionId, conversionStatus } = result!
        try {
          app.metrics.postbacks.inc({ outcome: status })
          if (status !== 'stored') app.deliveryLog.recordOutcome(delivery.sheet_id, status)
          if (status === 'updated') request.log.info({ conversionId, conversionStatus }, 'conversion updated')
          reply.send(new Accepted(status, conversionId, conversionStatus))
        } catch (failure) {
          untyped.send(failure)
        }
      })
    },
  )
}
