// Server entry: reads the config, builds the app, listens, and shuts down cleanly on a signal.
import { ConfigError, loadConfig } from './config.ts'

async function main(): Promise<void> {
  let config
  try {
    config = loadConfig()
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`postback-store: ${error.message}`)
      process.exit(2)
    }
    throw error
  }
  // Loaded once the config is valid: a bad setting is reported at once, without loading the service.
  const { buildApp } = await import('./app.ts')
  const { bufferedStdout } = await import('./logger.ts')
  const app = await buildApp(config)
  // The log is buffered: what is waiting is written out before the process ends.
  const exit = (code: number) => {
    setTimeout(() => process.exit(code), 2000)
    try {
      bufferedStdout().flush(() => process.exit(code))
    } catch {
      process.exit(code)
    }
  }
  let closing = false
  const shutdown = (signal: string) => {
    if (closing) return
    closing = true
    app.log.info({ signal }, 'shutting down')
    const timer = setTimeout(() => {
      app.log.error('shutdown took too long; exiting')
      process.exit(1)
    }, 15_000)
    timer.unref()
    app.close().then(
      () => exit(0),
      (error: unknown) => {
        app.log.error({ err: error }, 'shutdown failed')
        exit(1)
      },
    )
  }
  process.on('SIGTERM', () => shutdown('SIGTERM'))
  process.on('SIGINT', () => shutdown('SIGINT'))
  await app.listen({ host: config.HOST, port: config.PORT })
  // The log is buffered: whoever waits for "Server listening" sees it now.
  bufferedStdout().flush()
}

main().catch((error: unknown) => {
  console.error(`postback-store: failed to start: ${error instanceof Error ? error.message : String(error)}`)
  process.exit(1)
})
