// Echoes each request's id (taken or made by src/logging.ts) as the `x-request-id` response header,
// so a caller can quote it and an operator can find that request's log lines.
import fp from 'fastify-plugin'
import { REQUEST_ID_HEADER } from '../src/logging.ts'

export default fp(
  async function requestIdPlugin(app) {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header(REQUEST_ID_HEADER, request.id)
      done()
    })
  },
  { name: 'request-id' },
)
