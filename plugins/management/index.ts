// The authenticated management API under /api/v1/postback: internal services read conversions,
// summaries and delivery diagnostics, and provision sheets and keys. Encapsulated: the API-key check
// runs in this scope's `onRequest` (before any body is parsed) and cannot reach the receiver.
import type { FastifyInstance } from 'fastify'
import adminRoutes from './admin.ts'
import conversionRoutes from './conversions.ts'
import diagnosticRoutes from './diagnostics.ts'

export default async function management(app: FastifyInstance) {
  app.addHook('onRequest', app.auth([app.verifyApiKey]))
  await app.register(conversionRoutes)
  await app.register(diagnosticRoutes)
  await app.register(adminRoutes, { prefix: '/admin' })
}
