// The service as processes: start and stop, kill -9, several instances, the data folder lock.
// One test process for test/processes/ (see .taprc); each file also runs alone: npx tap test/processes/server.ts
import t from 'tap'

t.before(async () => {
  await import('./processes/server.ts')
  await import('./processes/crash.ts')
  await import('./processes/instances.ts')
  await import('./processes/data-dir-lock.ts')
})
