// Liveness and readiness for load balancers and orchestrators; kept out of the API document.
import type { FastifyInstance } from 'fastify'

export default async function health(app: FastifyInstance) {
  app.get('/livez', async () => ({ status: 'ok' }))

  app.get('/readyz', async (request, reply) => {
    try {
      await app.prisma.$queryRaw`SELECT 1`
      return { status: 'ready' }
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed')
      reply.header('retry-after', String(app.config.RETRY_AFTER_SECONDS))
      return reply.code(503).send({ error: 'storage_unavailable', message: 'the database does not answer' })
    }
  })
}
