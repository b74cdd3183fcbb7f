// The benchmark's baseline (registered only by bench/server.ts, never by the app): the receiver as a
// first version would write it, awaiting one Prisma write per request, with the same validation
// (parseDelivery) and the same answers as the real receiver for first deliveries and repeats. It makes
// no lifecycle moves: in the bench's updates mix, a later status answers `duplicate`, as from the
// floor (bench/floor.ts). No group commit, no queue bound.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { parseDelivery } from '../src/delivery.ts'
import { UnknownSheetError } from '../src/errors.ts'
import type { ParsedQuery } from '../src/query-string.ts'
import type { ConversionStatus } from '../src/lifecycle.ts'
import { receiverRouteSchema, type Delivery } from '../src/schemas/receiver.ts'

export const NAIVE_RECEIVER_PATH = '/bench/naive'

export default async function naiveReceiver(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const { operationId: _operationId, ...schema } = receiverRouteSchema
  app.get(
    NAIVE_RECEIVER_PATH,
    {
      schema: { ...schema, hide: true },
      // The real receiver's validation: parseDelivery's InputError reaches the app's error handler as a 400.
      validatorCompiler: () => (query: unknown) => ({ value: parseDelivery(query as ParsedQuery) }),
      exposeHeadRoute: false,
    },
    async (request) => {
      const delivery = request.query as unknown as Delivery
      // The benchmark's requests name the currency; a delivery without one costs a sheet read.
      let currency = delivery.currency
      if (!currency) {
        const sheet = await app.prisma.sheet.findUnique({ where: { sheetId: delivery.sheet_id }, select: { defaultCurrency: true } })
        if (!sheet) throw new UnknownSheetError(delivery.sheet_id)
        currency = sheet.defaultCurrency
      }
      const [created] = await app.prisma.conversion.createManyAndReturn({
        data: [
          {
            sheetId: delivery.sheet_id,
            transactionId: delivery.transaction_id,
            payout: delivery.payout ?? null,
            currency,
            campaignId: delivery.campaign_id ?? null,
            adsetId: delivery.adset_id ?? null,
            adId: delivery.ad_id ?? null,
            event: delivery.event ?? '',
            status: delivery.status ?? 'approved',
            networkStatus: delivery.network_status ?? null,
          },
        ],
        skipDuplicates: true,
        select: { id: true, status: true },
      })
      if (created) return { status: 'stored' as const, conversion_id: created.id.toString(), conversion_status: created.status as ConversionStatus }
      const existing = await app.prisma.conversion.findUnique({
        where: { sheetId_transactionId_event: { sheetId: delivery.sheet_id, transactionId: delivery.transaction_id, event: delivery.event ?? '' } },
        select: { id: true, status: true },
      })
      if (!existing) throw new UnknownSheetError(delivery.sheet_id)
      return { status: 'duplicate' as const, conversion_id: existing.id.toString(), conversion_status: existing.status as ConversionStatus }
    },
  )
}
