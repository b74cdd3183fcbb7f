// Admin routes for internal services (global keys only): sheets and API keys. The only
// management routes that change anything.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { createApiKey, listApiKeys, requireGlobal, revokeApiKey } from '../../src/api-keys.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { ApiKey, CreatedApiKey, CreateKeyBody, CreateSheetBody, KeyParams, managementRoute, Sheet, SheetParams } from '../../src/schemas/management.ts'
import { createSheet, disableSheet, listSheets } from '../../src/sheets.ts'
import { principalOf } from '../auth.ts'

export default async function adminRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  app.addHook('onRequest', async (request) => requireGlobal(principalOf(request)))

  app.get(
    '/sheets',
    { schema: managementRoute({ tag: 'admin', operationId: 'listSheets', summary: 'List sheets', response: { 200: Type.Array(ref(Sheet)) } }) },
    async () => listSheets(app.prisma),
  )

  app.post(
    '/sheets',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'createSheet',
        summary: 'Create a sheet',
        body: CreateSheetBody,
        response: { 201: ref(Sheet), 404: ErrorRef, 409: ErrorRef },
      }),
    },
    async (request, reply) => {
      const { sheet_id: sheetId, name, currency } = request.body
      return reply.code(201).send(await createSheet(app.prisma, { sheetId, name, currency }))
    },
  )

  app.post(
    '/sheets/:sheet_id/disable',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'disableSheet',
        summary: 'Disable a sheet: the receiver refuses its deliveries from now on',
        params: SheetParams,
        response: { 200: ref(Sheet), 404: ErrorRef },
      }),
    },
    async (request) => disableSheet(app.prisma, request.params.sheet_id),
  )

  app.get(
    '/keys',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'listApiKeys',
        summary: 'List API keys (without the keys themselves)',
        response: { 200: Type.Array(ref(ApiKey)) },
      }),
    },
    async () => listApiKeys(app.prisma),
  )

  app.post(
    '/keys',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'createApiKey',
        summary: 'Create an API key; the key is in this answer only',
        body: CreateKeyBody,
        response: { 201: ref(CreatedApiKey), 404: ErrorRef },
      }),
    },
    async (request, reply) => {
      const { name, global, sheet_ids: sheetIds } = request.body
      return reply.code(201).send(await createApiKey(app.prisma, { name, global, sheetIds }))
    },
  )

  app.post(
    '/keys/:key_id/revoke',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'revokeApiKey',
        summary: 'Revoke an API key at once',
        params: KeyParams,
        response: { 200: ref(ApiKey), 404: ErrorRef },
      }),
    },
    async (request) => revokeApiKey(app.prisma, request.params.key_id),
  )
}
