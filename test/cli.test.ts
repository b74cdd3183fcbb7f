// postback-admin as a user runs it: the package's bin, one JSON value on the last stdout line.
import t from 'tap'
import { readMigrations } from '../src/migrations.ts'
import { onPostgres, pgliteCopy, uniqueId } from './helpers.ts'
import { run } from './processes.ts'

const env = onPostgres ? { DATABASE_URL: process.env.DATABASE_URL } : { DATABASE_URL: '', DATA_DIR: pgliteCopy(t) }
const admin = (...args: string[]) => run(['bin/postback-admin.js', ...args], env)
const lastLine = (text: string) => JSON.parse(text.trim().split('\n').at(-1)!)

t.test('sheet create, list, disable', async (t) => {
  const id = uniqueId('cli')
  const created = await admin('sheet', 'create', '--id', id, '--name', 'Main account', '--currency', 'eur')
  t.equal(created.code, 0, created.stderr)
  t.match(lastLine(created.stdout), { sheet_id: id, name: 'Main account', default_currency: 'EUR', active: true })
  t.match(lastLine(created.stdout).created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)

  const again = await admin('sheet', 'create', '--id', id)
  t.equal(again.code, 1)
  t.match(again.stderr, `sheet ${id} already exists`)
  t.equal(again.stdout, '')

  const disabled = await admin('sheet', 'disable', id)
  t.equal(disabled.code, 0, disabled.stderr)
  t.match(lastLine(disabled.stdout), { sheet_id: id, active: false })

  const list = await admin('sheet', 'list')
  t.equal(list.code, 0, list.stderr)
  t.match(lastLine(list.stdout).find((sheet: { sheet_id: string }) => sheet.sheet_id === id), { active: false, name: 'Main account' })
})

t.test('key create, list, revoke: the key is shown once and works until revoked', async (t) => {
  const sheet = uniqueId('cli-key')
  t.equal((await admin('sheet', 'create', '--id', sheet)).code, 0)
  const created = await admin('key', 'create', '--sheet', sheet, '--name', 'reporting')
  t.equal(created.code, 0, created.stderr)
  const key = lastLine(created.stdout)
  t.match(key, { name: 'reporting', global: false, sheet_ids: [sheet], revoked_at: null })
  t.match(key.key, /^pbk_[A-Za-z0-9_-]{43}$/)

  const global = lastLine((await admin('key', 'create', '--global')).stdout)
  t.match(global, { global: true, sheet_ids: [] })

  const list = await admin('key', 'list')
  const listed = lastLine(list.stdout).find((entry: { id: string }) => entry.id === key.id)
  t.match(listed, { id: key.id, name: 'reporting' })
  t.notOk(list.stdout.includes(key.key), 'list never shows a key')

  const revoked = await admin('key', 'revoke', key.id)
  t.equal(revoked.code, 0, revoked.stderr)
  t.match(lastLine(revoked.stdout).revoked_at, /Z$/)

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
  t.same(lastLine(result.stdout), { store: onPostgres ? 'postgresql' : 'pglite', applied: [], alreadyApplied: readMigrations().map((m) => m.name) })
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
  const badConfig = await run(['bin/postback-admin.js', 'sheet', 'list'], { DATABASE_URL: 'mysql://nope' })
  t.equal(badConfig.code, 1)
  t.match(badConfig.stderr, /DATABASE_URL="mysql:\/\/nope" is not allowed/)
})
