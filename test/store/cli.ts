// postback-admin: its commands run in this process (src/cli.ts `run`, one JSON value on the last
// stdout line), and once as a user runs it, through the package's bin.
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { openDatabase } from '../../src/database.ts'
import { readMigrations } from '../../src/migrations.ts'
import { admin as adminIn, adminOn, newPostgresDatabase, onPostgres, pgliteCopy, storeEnv, uniqueId } from '../helpers.ts'
import { run } from '../processes.ts'

// The commands share one open store: a PGlite start costs about a second of CPU, and a command's
// own open and close are what the fresh-store and bin tests below go through.
const env = storeEnv(t)
const store = await openDatabase(loadConfig(env))
t.teardown(() => store.close())
const admin = adminOn(env, store)

t.test('sheet create, list, disable', async (t) => {
  const id = uniqueId('cli')
  const created = await admin('sheet', 'create', '--id', id, '--name', 'Main account', '--currency', 'eur')
  t.equal(created.code, 0, created.stderr)
  t.match(created.result, { sheet_id: id, name: 'Main account', default_currency: 'EUR', active: true })
  t.match(created.result.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)

  const again = await admin('sheet', 'create', '--id', id)
  t.equal(again.code, 1)
  t.match(again.stderr, `sheet ${id} already exists`)
  t.equal(again.stdout, '')

  const disabled = await admin('sheet', 'disable', id)
  t.equal(disabled.code, 0, disabled.stderr)
  t.match(disabled.result, { sheet_id: id, active: false })

  const list = await admin('sheet', 'list')
  t.equal(list.code, 0, list.stderr)
  t.match(list.result.find((sheet: { sheet_id: string }) => sheet.sheet_id === id), { active: false, name: 'Main account' })
})

t.test('key create, list, revoke: the key is shown once and works until revoked', async (t) => {
  const sheet = uniqueId('cli-key')
  t.equal((await admin('sheet', 'create', '--id', sheet)).code, 0)
  const created = await admin('key', 'create', '--sheet', sheet, '--name', 'reporting')
  t.equal(created.code, 0, created.stderr)
  const key = created.result
  t.match(key, { name: 'reporting', global: false, sheet_ids: [sheet], revoked_at: null })
  t.match(key.key, /^pbk_[A-Za-z0-9_-]{43}$/)

  const global = (await admin('key', 'create', '--global')).result
  t.match(global, { global: true, sheet_ids: [] })

  const list = await admin('key', 'list')
  const listed = list.result.find((entry: { id: string }) => entry.id === key.id)
  t.match(listed, { id: key.id, name: 'reporting' })
  t.notOk(list.stdout.includes(key.key), 'list never shows a key')

  const revoked = await admin('key', 'revoke', key.id)
  t.equal(revoked.code, 0, revoked.stderr)
  t.match(revoked.result.revoked_at, /Z$/)

  for (const args of [['key', 'create'], ['key', 'create', '--global', '--sheet', sheet]]) {
    const result = await admin(...args)
    t.equal(result.code, 2, args.join(' '))
    t.match(result.stderr, 'key create needs --sheet ID[,ID...] or --global')
  }
  const unknown = await admin('key', 'create', '--sheet', `${sheet},${uniqueId('nope')}`)
  t.equal(unknown.code, 1)
  t.match(unknown.stderr, 'unknown sheet')
  const missing = await admin('key', 'revoke', 'key_nope')
  t.equal(missing.code, 1)
})

t.test('migrate reports what it applied', async (t) => {
  const result = await admin('migrate')
  t.equal(result.code, 0, result.stderr)
  t.same(result.result, { store: onPostgres ? 'postgresql' : 'pglite', applied: [], alreadyApplied: readMigrations().map((m) => m.name) })
})

/** A store nothing has migrated: a new database on the PostgreSQL server, or a PGlite folder as its first open leaves it. */
async function freshStoreEnv(t: { teardown(fn: () => unknown): void }): Promise<Record<string, string | undefined>> {
  return onPostgres ? { DATABASE_URL: await newPostgresDatabase(t) } : { DATABASE_URL: '', DATA_DIR: pgliteCopy(t, { migrated: false }) }
}

t.test('only migrate changes the schema: on a store that is behind, other commands stop and say so', async (t) => {
  const fresh = await freshStoreEnv(t)
  const tables = async () => {
    const db = await openDatabase(loadConfig(fresh))
    try {
      const rows = await db.withSession((session) =>
        session.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"),
      )
      return rows.map((row) => row.table_name)
    } finally {
      await db.close()
    }
  }
  const names = readMigrations().map((m) => m.name)

  const refused = await adminIn(fresh, 'key', 'list')
  t.equal(refused.code, 1)
  t.equal(refused.stdout, '')
  t.equal(
    refused.stderr,
    `postback-admin: the store's schema is behind: ${names.length} migration${names.length === 1 ? '' : 's'} pending (${names.join(', ')}); run \`postback-admin migrate\`\n`,
  )
  t.same(await tables(), [], 'no table created, not even the bookkeeping one')

  const migrated = await adminIn(fresh, 'migrate')
  t.equal(migrated.code, 0, migrated.stderr)
  t.same(migrated.result.applied, names)
  // From here on, one open store (the commands' own opens were gone through above).
  const db = await openDatabase(loadConfig(fresh))
  t.teardown(() => db.close())
  const listed = await adminOn(fresh, db)('key', 'list')
  t.equal(listed.code, 0, listed.stderr)
  t.same(listed.result, [])

  // A store with the bookkeeping table that lacks the newest migration is behind too.
  const newest = names.at(-1)!
  await db.withSession((session) => session.query('DELETE FROM "_prisma_migrations" WHERE migration_name = $1', [newest]))
  const behind = await adminOn(fresh, db)('sheet', 'create', '--id', 'never')
  t.equal(behind.code, 1)
  t.match(behind.stderr, `the store's schema is behind: 1 migration pending (${newest}); run \`postback-admin migrate\``)
})

t.test('errors: a message on stderr and a non-zero exit', async (t) => {
  const cases: Array<[string[], number, RegExp]> = [
    [['sheet', 'create'], 2, /sheet create needs --id ID/],
    [['sheet', 'create', '--id', 'x', '--bogus'], 2, /Unknown option '--bogus'/],
    [['sheet', 'create', '--id', uniqueId('c'), '--currency', 'XYZ'], 1, /currency "XYZ" is not an ISO 4217 code/],
    [['sheet', 'create', '--id', 'has space'], 1, /sheet id must be 1 to 128 characters/],
    [['sheet', 'disable', uniqueId('missing')], 1, /does not exist/],
    [['frobnicate'], 2, /usage: postback-admin/],
  ]
  for (const [args, code, message] of cases) {
    const result = await admin(...args)
    t.equal(result.code, code, args.join(' '))
    t.match(result.stderr, message, args.join(' '))
  }
  const badConfig = await adminIn({ DATABASE_URL: 'mysql://nope' }, 'sheet', 'list')
  t.equal(badConfig.code, 1)
  t.match(badConfig.stderr, /DATABASE_URL="mysql:\/\/nope" is not allowed/)
})

t.test('the bin, as a user runs it: a real process, its stdout and its exit codes', async (t) => {
  const id = uniqueId('cli-bin')
  const env = storeEnv(t) // its own copy: the embedded store above is held open by this process
  const created = await run(['bin/postback-admin.js', 'sheet', 'create', '--id', id], env)
  t.equal(created.code, 0, created.stderr)
  t.match(JSON.parse(created.stdout.trim().split('\n').at(-1)!), { sheet_id: id, active: true })
  const usage = await run(['bin/postback-admin.js', 'frobnicate'], env)
  t.equal(usage.code, 2)
  t.match(usage.stderr, /^usage: postback-admin/)
})
