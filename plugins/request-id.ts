// Each request's identity in the log: echoes its id (taken or made by src/logging.ts) as the
// `x-request-id` response header, so a caller can quote it and an operator can find that request's
// lines, and writes the request's one access line, `request completed`, when it has been answered.
// Fastify's own request logging (an `incoming request` line too) is off (src/logging.ts): two lines
// per request cost the receiver about a fifth of its throughput at `info` (BENCHMARKS.md).
import fp from 'fastify-plugin'
import { REQUEST_ID_HEADER } from '../src/logging.ts'

export default fp(
  async function requestIdPlugin(app) {
    app.addHook('onRequest', (request, reply, done) => {
      reply.header(REQUEST_ID_HEADER, request.id)
      done()
    })
    app.addHook('onResponse', (request, reply, done) => {
      // At the route's level: probes and scrapes (logLevel warn at info) write nothing.
      request.log.info({ req: request, res: reply, responseTime: reply.elapsedTime }, 'request completed')
      done()
    })
  },
  { name: 'request-id' },
)
