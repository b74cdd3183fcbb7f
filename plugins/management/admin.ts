// Admin routes for internal services (global keys only): sheets and API keys. The only
// management routes that change anything.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { createApiKey, listApiKeys, requireGlobal, revokeApiKey } from '../../src/api-keys.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { ApiKey, authResponses, bearerSecurity, CreatedApiKey, CreateKeyBody, CreateSheetBody, KeyParams, Sheet, SheetParams } from '../../src/schemas/management.ts'
import { createSheet, disableSheet, listSheets } from '../../src/sheets.ts'
import { principalOf } from '../auth.ts'

const admin = (operationId: string, summary: string) => ({ operationId, summary, tags: ['admin'], security: bearerSecurity })

export default async function adminRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', async (request) => requireGlobal(principalOf(request)))

  app.get(
    '/sheets',
    { schema: { ...admin('listSheets', 'List sheets'), response: { 200: Type.Array(ref(Sheet)), ...authResponses } } },
    async () => listSheets(app.prisma),
  )

  app.post(
    '/sheets',
    { schema: { ...admin('createSheet', 'Create a sheet'), body: CreateSheetBody, response: { 201: ref(Sheet), 404: ErrorRef, 409: ErrorRef, ...authResponses } } },
    async (request, reply) => {
      const { sheet_id: sheetId, name, currency } = request.body
      return reply.code(201).send(await createSheet(app.prisma, { sheetId, name, currency }))
    },
  )

  app.post(
    '/sheets/:sheet_id/disable',
    { schema: { ...admin('disableSheet', 'Disable a sheet: the receiver refuses its deliveries from now on'), params: SheetParams, response: { 200: ref(Sheet), 404: ErrorRef, ...authResponses } } },
    async (request) => disableSheet(app.prisma, request.params.sheet_id),
  )

  app.get(
    '/keys',
    { schema: { ...admin('listApiKeys', 'List API keys (without the keys themselves)'), response: { 200: Type.Array(ref(ApiKey)), ...authResponses } } },
    async () => listApiKeys(app.prisma),
  )

  app.post(
    '/keys',
    { schema: { ...admin('createApiKey', 'Create an API key; the key is in this answer only'), body: CreateKeyBody, response: { 201: ref(CreatedApiKey), 404: ErrorRef, ...authResponses } } },
    async (request, reply) => {
      const { name, global, sheet_ids: sheetIds } = request.body
      return reply.code(201).send(await createApiKey(app.prisma, { name, global, sheetIds }))
    },
  )

  app.post(
    '/keys/:key_id/revoke',
    { schema: { ...admin('revokeApiKey', 'Revoke an API key at once'), params: KeyParams, response: { 200: ref(ApiKey), 404: ErrorRef, ...authResponses } } },
    async (request) => revokeApiKey(app.prisma, request.params.key_id),
  )
}
