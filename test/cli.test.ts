// postback-admin as a user runs it: the package's bin, one JSON value on the last stdout line.
import t from 'tap'
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

t.test('migrate reports what it applied', async (t) => {
  const result = await admin('migrate')
  t.equal(result.code, 0, result.stderr)
  t.match(lastLine(result.stdout), { store: onPostgres ? 'postgresql' : 'pglite', applied: [], alreadyApplied: ['20261126150000_init'] })
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
