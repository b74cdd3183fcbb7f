// The batch writer and the conversion lifecycle.
// One test process for test/writer/ (see .taprc); each file also runs alone: npx tap test/writer/conversion-writer.ts
import t from 'tap'

t.before(async () => {
  await import('./writer/conversion-writer.ts')
  await import('./writer/lifecycle.ts')
})
