// Admin routes (keys with the admin role): sheets, their secrets and allow-lists, and API keys. The
// only management routes that change anything. A route about one sheet also takes a sheet-scoped
// admin key of that sheet; the others need a global admin key.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { createApiKey, listApiKeys, requireAdmin, revokeApiKey } from '../../src/api-keys.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import {
  AllowListBody,
  ApiKey,
  CreatedApiKey,
  CreateKeyBody,
  CreateSheetBody,
  KeyParams,
  managementRoute,
  RotateTokenBody,
  Sheet,
  SheetParams,
  SheetToken,
} from '../../src/schemas/management.ts'
import { clearAllowedAddresses, clearSheetToken, rotateSheetToken, setAllowedAddresses } from '../../src/sheet-security.ts'
import { createSheet, disableSheet, getSheet, listSheets } from '../../src/sheets.ts'
import { principalOf } from '../auth.ts'

export default async function adminRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  // One check for every route here, so that no admin route can be added without it.
  app.addHook('onRequest', async (request) => requireAdmin(principalOf(request), (request.params as { sheet_id?: string }).sheet_id))

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
    async (request) => {
      const sheet = await disableSheet(app.prisma, request.params.sheet_id)
      app.sheetSecurity.forget(request.params.sheet_id)
      return sheet
    },
  )

  // A change made here is seen by this instance's receiver at once, by the others within SHEET_SECURITY_TTL_MS.
  const securityChanged = (sheetId: string) => {
    app.sheetSecurity.forget(sheetId)
    return getSheet(app.prisma, sheetId)
  }

  app.post(
    '/sheets/:sheet_id/token',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'rotateSheetToken',
        summary: "Create or rotate a sheet's secret; the secret is in this answer only",
        description:
          'From now on every delivery to the sheet must carry the secret as `token=`. After a rotation the previous secret stays valid ' +
          'for `grace_seconds` (default 86400). Other instances see the change within SHEET_SECURITY_TTL_MS.',
        params: SheetParams,
        body: RotateTokenBody,
        response: { 200: ref(SheetToken), 404: ErrorRef },
      }),
      // The body is optional: a POST without one rotates with the default grace period.
      preValidation: async (request) => {
        request.body ??= {}
      },
    },
    async (request) => {
      const created = await rotateSheetToken(app.prisma, request.params.sheet_id, request.body.grace_seconds)
      app.sheetSecurity.forget(request.params.sheet_id)
      return created
    },
  )

  const clearTokenSchema = (operationId: string) =>
    managementRoute({
      tag: 'admin',
      operationId,
      summary: "Remove a sheet's secret: deliveries need no token",
      params: SheetParams,
      response: { 200: ref(Sheet), 404: ErrorRef },
    })
  const clearToken = async (request: { params: { sheet_id: string } }) => {
    await clearSheetToken(app.prisma, request.params.sheet_id)
    return securityChanged(request.params.sheet_id)
  }
  app.delete('/sheets/:sheet_id/token', { schema: clearTokenSchema('clearSheetToken') }, clearToken)
  app.post('/sheets/:sheet_id/token/clear', { schema: clearTokenSchema('clearSheetTokenPost') }, clearToken)

  app.post(
    '/sheets/:sheet_id/allow',
    {
      schema: managementRoute({
        tag: 'admin',
        operationId: 'setSheetAllowList',
        summary: 'Set the addresses and CIDRs deliveries to a sheet may come from',
        description: 'Replaces the allow-list. A delivery from elsewhere gets 403 `address_not_allowed` and is kept in the rejection log with its address.',
        params: SheetParams,
        body: AllowListBody,
        response: { 200: ref(Sheet), 404: ErrorRef },
      }),
    },
    async (request) => {
      await setAllowedAddresses(app.prisma, request.params.sheet_id, request.body.addresses)
      return securityChanged(request.params.sheet_id)
    },
  )

  const clearAllowSchema = (operationId: string) =>
    managementRoute({
      tag: 'admin',
      operationId,
      summary: "Remove a sheet's allow-list: deliveries may come from any address",
      params: SheetParams,
      response: { 200: ref(Sheet), 404: ErrorRef },
    })
  const clearAllow = async (request: { params: { sheet_id: string } }) => {
    await clearAllowedAddresses(app.prisma, request.params.sheet_id)
    return securityChanged(request.params.sheet_id)
  }
  app.delete('/sheets/:sheet_id/allow', { schema: clearAllowSchema('clearSheetAllowList') }, clearAllow)
  app.post('/sheets/:sheet_id/allow/clear', { schema: clearAllowSchema('clearSheetAllowListPost') }, clearAllow)

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
      const { name, global, sheet_ids: sheetIds, role } = request.body
      return reply.code(201).send(await createApiKey(app.prisma, { name, global, sheetIds, role }))
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
