// Configuration, logs, metrics, rate limits, the OpenAPI document.
// One test process for test/operations/ (see .taprc); each file also runs alone: npx tap test/operations/config.ts
import t from 'tap'

t.before(async () => {
  await import('./operations/config.ts')
  await import('./operations/logging.ts')
  await import('./operations/metrics.ts')
  await import('./operations/rate-limit.ts')
  await import('./operations/openapi.ts')
  await import('./operations/ops-listener.ts')
  await import('./operations/suite-layout.ts')
})
