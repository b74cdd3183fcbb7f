// The store: failures and outages, migrations, postback-admin.
// One test process for test/store/ (see .taprc); each file also runs alone: npx tap test/store/storage-failure.ts
import t from 'tap'

t.before(async () => {
  await import('./store/storage-failure.ts')
  await import('./store/database-outage.ts')
  await import('./store/migrations.ts')
  await import('./store/cli.ts')
})
