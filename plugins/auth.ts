// Bearer API-key authentication for the management API, as an @fastify/auth strategy
// (https://github.com/fastify/fastify-auth). Shared infrastructure: it only decorates; the
// management plugin attaches it in its own `onRequest`, so the public receiver stays public.
import fastifyAuth from '@fastify/auth'
import type { FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { authenticate, type Principal } from '../src/api-keys.ts'
import { UnauthorizedError } from '../src/errors.ts'

declare module 'fastify' {
  interface FastifyInstance {
    verifyApiKey: (request: FastifyRequest) => Promise<void>
  }
  interface FastifyRequest {
    /** The authenticated API key's scope; set by verifyApiKey on management routes. */
    principal: Principal | null
  }
}

const BEARER = /^Bearer ([^\s]+)$/i

export default fp(
  async function authPlugin(app) {
    await app.register(fastifyAuth)
    app.decorateRequest('principal', null)
    app.decorate('verifyApiKey', async function verifyApiKey(request: FastifyRequest) {
      const header = request.headers.authorization
      if (!header) throw new UnauthorizedError('missing API key: send "Authorization: Bearer <key>"')
      const match = BEARER.exec(header)
      if (!match) throw new UnauthorizedError('malformed Authorization header: expected "Bearer <key>"')
      const principal = await authenticate(app.prisma, match[1]!)
      if (!principal) throw new UnauthorizedError('unknown or revoked API key')
      request.principal = principal
    })
  },
  { name: 'auth', dependencies: ['db'] },
)

/** The authenticated key of a management request. */
export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new UnauthorizedError('missing API key: send "Authorization: Bearer <key>"')
  return request.principal
}
