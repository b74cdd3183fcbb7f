// Delivery diagnostics ("my network sends but nothing shows") and the receiver URL builder.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { sheetScope } from '../../src/api-keys.ts'
import { listRejections, sheetStatus } from '../../src/diagnostics.ts'
import { AppError, NotFoundError } from '../../src/errors.ts'
import { receiverUrl } from '../../src/receiver-url.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { managementRoute, ReceiverUrl, ReceiverUrlQuery, RejectionPage, RejectionQuery, SheetParams, SheetStatus } from '../../src/schemas/management.ts'
import { principalOf } from '../auth.ts'

const rejectionsSchema = managementRoute({
  tag: 'diagnostics',
  summary: 'List rejected deliveries',
  description: 'The bounded log of deliveries the receiver refused, for known sheets, newest first.',
  operationId: 'listRejections',
  querystring: RejectionQuery,
  response: { 200: ref(RejectionPage) },
})

const statusSchema = managementRoute({
  tag: 'diagnostics',
  summary: 'Receiver status of a sheet',
  description: 'Last received conversion, last-24-hour counts of stored, updated, duplicate and rejected deliveries, and the most frequent rejection reasons.',
  operationId: 'getSheetStatus',
  params: SheetParams,
  response: { 200: ref(SheetStatus), 404: ErrorRef },
})

const receiverUrlSchema = managementRoute({
  tag: 'diagnostics',
  summary: 'Receiver URL for a tracker',
  description: "The full receiver URL of a sheet with a tracker's macro syntax, to paste into the network.",
  operationId: 'getReceiverUrl',
  params: SheetParams,
  querystring: ReceiverUrlQuery,
  response: { 200: ref(ReceiverUrl), 404: ErrorRef, 500: ErrorRef },
})

/** The receiver's public base URL: PUBLIC_BASE_URL, else the listen address unless it is a wildcard. */
export function publicBaseUrl(config: { PUBLIC_BASE_URL?: string; HOST: string; PORT: number }): string | null {
  if (config.PUBLIC_BASE_URL) return config.PUBLIC_BASE_URL
  if (config.HOST === '0.0.0.0' || config.HOST === '::' || config.HOST === '[::]') return null
  return `http://${config.HOST.includes(':') ? `[${config.HOST}]` : config.HOST}:${config.PORT}`
}

export default async function diagnosticRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const baseUrl = publicBaseUrl(app.config)

  app.get('/rejections', { schema: rejectionsSchema }, async (request) => {
    await app.deliveryLog.flush()
    return listRejections(app.prisma, sheetScope(principalOf(request), request.query.sheet_id), request.query)
  })

  app.get('/sheets/:sheet_id/status', { schema: statusSchema }, async (request) => {
    sheetScope(principalOf(request), request.params.sheet_id)
    await app.deliveryLog.flush()
    return sheetStatus(app.prisma, request.params.sheet_id)
  })

  app.get('/sheets/:sheet_id/receiver-url', { schema: receiverUrlSchema }, async (request) => {
    const sheetId = request.params.sheet_id
    sheetScope(principalOf(request), sheetId)
    const sheet = await app.prisma.sheet.findUnique({ where: { sheetId } })
    if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
    if (baseUrl === null) {
      // Listening on every address (HOST=0.0.0.0 in the container): which one the networks reach is unknown.
      throw new AppError(500, 'not_configured', `set PUBLIC_BASE_URL (the receiver's public URL, e.g. https://postbacks.example.com): HOST=${app.config.HOST} listens on every address, so the URL cannot be derived`)
    }
    const token = request.query.token ?? (sheet.tokenHash ? undefined : null)
    return receiverUrl(baseUrl, sheetId, request.query.tracker, token)
  })
}
