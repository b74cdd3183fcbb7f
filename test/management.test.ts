// The management API: keys and roles, conversions, summaries, diagnostics.
// One test process for test/management/ (see .taprc); each file also runs alone: npx tap test/management/management-auth.ts
import t from 'tap'

t.before(async () => {
  await import('./management/management-auth.ts')
  await import('./management/key-roles.ts')
  await import('./management/management-conversions.ts')
  await import('./management/conversions.ts')
  await import('./management/management-diagnostics.ts')
})
