// The receiver: deliveries, macros and hostile input, the rejection log, test postbacks.
// One test process for test/receiver/ (see .taprc); each file also runs alone: npx tap test/receiver/receiver.ts
import t from 'tap'

t.before(async () => {
  await import('./receiver/receiver.ts')
  await import('./receiver/macros.ts')
  await import('./receiver/hostile-input.ts')
  await import('./receiver/delivery.ts')
  await import('./receiver/delivery-log.ts')
  await import('./receiver/test-postbacks.ts')
})
