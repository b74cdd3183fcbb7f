// The server under test for `npm run bench` (bench/run.ts spawns it as a child process): the real app
// from buildApp, configured from the environment like src/server.ts, plus two routes that exist only
// here: GET /bench/noop (bench/noop-route.ts) and the naive receiver (bench/naive-receiver.ts).
// It tells its parent its URL over IPC and closes cleanly on SIGTERM.
import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import naiveReceiver from './naive-receiver.ts'
import noopRoute from './noop-route.ts'

const config = loadConfig()
const app = await buildApp(config)
await app.register(noopRoute)
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
