// The operations surface on a listener of its own: with OPS_PORT set, /metrics and the API
// documentation (/docs, /docs/json, ...) answer only on OPS_HOST:OPS_PORT, and the main listener
// answers 404 for them, so that only the receiver and the API face the network. The probes (/livez,
// /readyz) answer on both; nothing else answers on the operations listener. Without OPS_PORT (the
// default) every route is on the main listener.
// The second listener is a plain HTTP server that hands its requests to this same app
// (`app.routing`): the same hooks, logging, request ids and metrics. It starts when the app is
// ready (so also under `inject` once OPS_PORT is set; a port taken stops start-up) and closes with
// the app. Which routes answer where is decided on the route the router matched, not on the URL's
// text: the router decodes percent-escapes and takes absolute URLs (`/%6Detrics` is /metrics).
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import fp from 'fastify-plugin'

const ON_OPS = Symbol('arrived on the operations listener')
type OpsRequest = IncomingMessage & { [ON_OPS]?: true }

const PROBES = new Set(['/livez', '/readyz'])

/** Whether a route (its pattern, e.g. `/docs/*`) belongs to the operations surface: the Prometheus scrape and the documentation. */
export function isOpsRoute(route: string): boolean {
  return route === '/metrics' || route === '/docs' || route.startsWith('/docs/')
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The operations listener's URL once the app is ready with OPS_PORT set; otherwise undefined. */
    opsUrl(): string | undefined
  }
}

export default fp(
  async function opsPlugin(app) {
    const { OPS_PORT: port, OPS_HOST: host } = app.config
    let server: Server | undefined
    app.decorate('opsUrl', () => {
      const address = server?.address() as AddressInfo | null | undefined
      if (!address) return undefined
      return `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`
    })
    if (port === undefined) return

    app.addHook('onRequest', (request, reply, done) => {
      // Undefined for a URL no route matches: the not-found handler answers it on either listener.
      const route = request.routeOptions.url
      const onOps = (request.raw as OpsRequest)[ON_OPS] === true
      if (route === undefined || (onOps ? isOpsRoute(route) || PROBES.has(route) : !isOpsRoute(route))) return done()
      reply.callNotFound()
    })

    app.addHook('onReady', async () => {
      const ops = createServer((request: OpsRequest, response) => {
        request[ON_OPS] = true
        app.routing(request, response)
      })
      await new Promise<void>((resolve, reject) => {
        ops.once('error', reject)
        ops.listen(port, host, () => {
          ops.off('error', reject)
          resolve()
        })
      })
      server = ops
      app.log.info(`operations listener (/metrics, /docs) at ${app.opsUrl()}`)
    })

    app.addHook('onClose', async () => {
      if (!server) return
      server.closeAllConnections()
      await new Promise<void>((resolve) => server!.close(() => resolve()))
    })
  },
  { name: 'ops', dependencies: ['config'] },
)
