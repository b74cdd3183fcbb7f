// The server under test for `npm run bench` (bench/run.ts spawns it as a child process): the real app
// from buildApp, configured from the environment like src/server.ts, plus two routes that exist only
// here: GET /bench/noop (no database work, the same answer shape as the receiver) and the naive
// receiver (bench/naive-receiver.ts). It tells its parent the URL over IPC and stops on SIGTERM.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { DeliveryAccepted } from '../src/schemas/receiver.ts'
import naiveReceiver from './naive-receiver.ts'

export const NOOP_PATH = '/bench/noop'

const config = loadConfig()
const app = (await buildApp(config)).withTypeProvider<TypeBoxTypeProvider>()
app.get(
  NOOP_PATH,
  { schema: { hide: true, response: { 200: DeliveryAccepted } }, exposeHeadRoute: false },
  async () => ({ status: 'stored' as const, conversion_id: '1' }),
)
await app.register(naiveReceiver)

process.on('SIGTERM', () => {
  app.close().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error('bench server: close failed', error)
      process.exit(1)
    },
  )
})
const url = await app.listen({ host: config.HOST, port: config.PORT })
process.send?.({ url })
