// Liveness and readiness for load balancers and orchestrators. Operations routes, not API: untagged,
// so the OpenAPI document leaves them out. Probed every few seconds, so their
// request lines stay out of the info-level log (a failing readiness check still logs a warning).
import type { FastifyInstance } from 'fastify'
import { probeLogLevel } from '../src/logging.ts'

export default async function health(app: FastifyInstance) {
  const logLevel = probeLogLevel(app.log.level)
  app.get('/livez', { logLevel }, async () => ({ status: 'ok' }))

  app.get('/readyz', { logLevel }, async (request, reply) => {
    try {
      await app.prisma.$queryRaw`SELECT 1`
      return { status: 'ready' }
    } catch (error) {
      app.metrics.databaseErrors.inc({ operation: 'readiness' })
      request.log.warn({ err: error }, 'readiness check failed')
      reply.header('retry-after', String(app.config.RETRY_AFTER_SECONDS))
      return reply.code(503).send({ error: 'storage_unavailable', message: 'the database does not answer' })
    }
  })
}
