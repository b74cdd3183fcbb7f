// The benchmark's ceiling (registered only by bench/server.ts): a route of the same app that does no
// database work and answers with the receiver's JSON shape, through the same query-string parser,
// hooks (request id, metrics) and response serializer.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { DeliveryAccepted } from '../src/schemas/receiver.ts'

export const NOOP_PATH = '/bench/noop'

export default async function noopRoute(fastify: FastifyInstance) {
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    NOOP_PATH,
    { schema: { hide: true, response: { 200: DeliveryAccepted } }, exposeHeadRoute: false },
    async () => ({ status: 'stored' as const, conversion_id: '1', conversion_status: 'approved' as const }),
  )
}
