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

const close = () => {
  app.close().then(
    () => process.exit(0),
    (error: unknown) => {
      console.error('bench server: close failed', error)
      process.exit(1)
    },
  )
}
process.on('SIGTERM', close)
// The bench has gone (killed, say): do not outlive it.
process.on('disconnect', close)
// The listen backlog: bench/run.ts opens all of a case's connections at once (1000 in the
// overload case); Node's default of 511 would leave some waiting on TCP retransmissions.
const backlog = Number(process.argv[2] ?? 511)
const url = await app.listen({ host: config.HOST, port: config.PORT, backlog })
process.send?.({ url })
