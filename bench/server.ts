// The server under test for `npm run bench` (bench/run.ts spawns it as a child process):
// `bench/server.ts BACKLOG` runs the real app from buildApp, configured from the environment like
// src/server.ts, plus two routes that exist only here: GET /bench/noop (bench/noop-route.ts) and the
// naive receiver (bench/naive-receiver.ts). `bench/server.ts BACKLOG floor` runs the floor instead
// (bench/floor.ts): a bare Fastify of its own, with none of the app loaded; `floor bare`, the bare
// floor (no lifecycle moves).
// It tells its parent its URL over IPC and closes cleanly on SIGTERM.
import { loadConfig } from '../src/config.ts'

const config = loadConfig()
// The listen backlog: bench/run.ts opens all of a case's connections at once (1000 in the
// overload case); Node's default of 511 would leave some waiting on TCP retransmissions.
const backlog = Number(process.argv[2] ?? 511)
const server = process.argv[3] === 'floor' ? await startFloorServer() : await startAppServer()

async function startFloorServer() {
  const { startFloor } = await import('./floor.ts')
  return startFloor(config, backlog, process.argv[4] === 'bare')
}

async function startAppServer() {
  const { buildApp } = await import('../src/app.ts')
  const { default: naiveReceiver } = await import('./naive-receiver.ts')
  const { default: noopRoute } = await import('./noop-route.ts')
  const app = await buildApp(config)
  await app.register(noopRoute)
  await app.register(naiveReceiver)
  const url = await app.listen({ host: config.HOST, port: config.PORT, backlog })
  return { url, close: () => app.close() }
}

const close = () => {
  server.close().then(
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
process.send?.({ url: server.url })
