// The authenticated management API under /api/v1/postback: internal services read conversions,
// summaries and delivery diagnostics, and provision sheets and keys. Encapsulated: the API-key check
// runs in this scope's `onRequest` (before any body is parsed) and cannot reach the receiver.
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { InputError } from '../../src/errors.ts'
import { clientKey } from '../rate-limit.ts'
import adminRoutes from './admin.ts'
import conversionRoutes from './conversions.ts'
import diagnosticRoutes from './diagnostics.ts'
import reconcileRoutes from './reconcile.ts'

/** PostgreSQL text cannot hold a NUL character: refuse one in any parameter, naming it, before any query. */
function refuseNul(request: FastifyRequest): void {
  for (const part of [request.params, request.query, request.body]) {
    if (!part || typeof part !== 'object') continue
    for (const [name, value] of Object.entries(part)) {
      const values: unknown[] = Array.isArray(value) ? value : [value]
      if (values.some((item) => typeof item === 'string' && item.includes('\u0000'))) {
        throw new InputError('invalid_parameter', name, `${name} contains a NUL character`)
      }
    }
  }
}

export default async function management(app: FastifyInstance) {
  // Before authentication, per client address, so that guessing keys is limited too; after it, per key.
  app.addHook('onRequest', app.limiter([{ name: 'management_address', max: app.config.RECEIVER_FLOOD_LIMIT, key: clientKey }]))
  app.addHook('onRequest', app.auth([app.verifyApiKey]))
  app.addHook('onRequest', app.limiter([{ name: 'management_key', max: app.config.MANAGEMENT_RATE_LIMIT, key: (request) => request.principal?.keyId ?? '' }]))
  app.addHook('preValidation', async (request) => refuseNul(request))
  await app.register(conversionRoutes)
  await app.register(diagnosticRoutes)
  await app.register(reconcileRoutes)
  await app.register(adminRoutes, { prefix: '/admin' })
}
