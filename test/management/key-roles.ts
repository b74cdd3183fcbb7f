// API key roles: `read` (conversions, summary, history, diagnostics) and `admin` (also /admin).
// A reporting service's global read key is refused on every admin route: the routes are taken from
// the app itself (its OpenAPI document), so a new admin route is covered without editing this test.
import t from 'tap'
import { createApiKey } from '../../src/api-keys.ts'
import { loadConfig } from '../../src/config.ts'
import { openDatabase } from '../../src/database.ts'
import { migrate, readMigrations } from '../../src/migrations.ts'
import { adminOn, deliverAll, newKeyHeader, newSheet, pgliteCopy, testApp } from '../helpers.ts'

const app = await testApp(t)
const [sheetA, sheetB] = [await newSheet(app), await newSheet(app)]
const [conversionId] = await deliverAll(app, [{ sheet_id: sheetA, transaction_id: 'r1', payout: '1.00' }])
const globalAdmin = await newKeyHeader(app, { global: true })

async function createKey(body: Record<string, unknown>) {
  const response = await app.inject({ method: 'POST', url: '/api/v1/postback/admin/keys', headers: globalAdmin, payload: body })
  return { statusCode: response.statusCode, json: response.json() }
}
const header = (key: string) => ({ authorization: `Bearer ${key}` })

const adminRoutes = Object.entries((app.swagger() as { paths: Record<string, Record<string, unknown>> }).paths)
  .filter(([path]) => path.startsWith('/api/v1/postback/admin/'))
  .flatMap(([path, operations]) => Object.keys(operations).map((method) => ({ method: method.toUpperCase(), path })))

t.test('default roles: a global key administers, a sheet-scoped key reads (as before roles)', async (t) => {
  const global = await createKey({ global: true })
  t.equal(global.statusCode, 201)
  t.equal(global.json.role, 'admin')
  const scoped = await createKey({ sheet_ids: [sheetA] })
  t.equal(scoped.json.role, 'read')
  t.equal((await createKey({ global: true, role: 'read' })).json.role, 'read')
  t.equal((await createKey({ global: true, role: 'owner' })).statusCode, 400)
  const list = await app.inject({ method: 'GET', url: '/api/v1/postback/admin/keys', headers: globalAdmin })
  t.ok(list.json().every((key: { role: string }) => key.role === 'read' || key.role === 'admin'), 'the key view shows the role')
})

t.test('a read key (global or scoped) is refused on every admin route', async (t) => {
  t.ok(adminRoutes.length >= 10, `the app's admin routes were found (${adminRoutes.length})`)
  const globalRead = (await createKey({ global: true, role: 'read', name: 'reporting' })).json.key as string
  const scopedRead = (await createKey({ sheet_ids: [sheetA] })).json.key as string
  const target = await createApiKey(app.prisma, { sheetIds: [sheetB] })
  for (const key of [globalRead, scopedRead]) {
    for (const { method, path } of adminRoutes) {
      const url = path.replace('{sheet_id}', sheetA).replace('{key_id}', target.id)
      const response = await app.inject({ method: method as 'GET', url, headers: header(key), payload: method === 'GET' ? undefined : { sheet_id: 'x', addresses: ['10.0.0.1'] } })
      t.equal(response.statusCode, 403, `${key === globalRead ? 'global' : 'scoped'} read key: ${method} ${url}`)
      t.equal(response.json().error, 'forbidden')
    }
  }
  // Nothing changed: the target key is not revoked, sheet A has no secret.
  t.equal((await app.prisma.apiKey.findUniqueOrThrow({ where: { id: target.id } })).revokedAt, null)
  t.equal((await app.prisma.sheet.findUniqueOrThrow({ where: { sheetId: sheetA } })).tokenHash, null)

  // It still reads everything.
  for (const url of ['/conversions', `/conversions/${conversionId}`, `/conversions/${conversionId}/history`, '/summary?group_by=campaign', '/rejections', `/sheets/${sheetA}/status`, `/sheets/${sheetA}/receiver-url?tracker=generic`]) {
    const response = await app.inject({ method: 'GET', url: `/api/v1/postback${url}`, headers: header(globalRead) })
    t.equal(response.statusCode, 200, `global read key reads ${url}`)
  }
})

t.test("a sheet-scoped admin key administers its sheets' secrets and allow-lists, nothing else", async (t) => {
  const key = (await createKey({ sheet_ids: [sheetB], role: 'admin' })).json.key as string
  const post = (url: string, payload?: Record<string, unknown>) =>
    app.inject({ method: 'POST', url: `/api/v1/postback/admin${url}`, headers: header(key), ...(payload ? { payload } : {}) })
  t.equal((await post(`/sheets/${sheetB}/token`)).statusCode, 200)
  t.equal((await post(`/sheets/${sheetB}/allow`, { addresses: ['10.0.0.0/8'] })).statusCode, 200)
  t.equal((await post(`/sheets/${sheetA}/token`)).statusCode, 403, "another sheet's secret")
  t.equal((await post('/sheets', { sheet_id: 'new-one' })).statusCode, 403, 'creating sheets needs a global admin key')
  t.equal((await post('/keys', { global: true })).statusCode, 403, 'creating keys needs a global admin key')
  t.equal((await app.inject({ method: 'GET', url: '/api/v1/postback/admin/keys', headers: header(key) })).statusCode, 403)
})

t.test('postback-admin key create --role', async (t) => {
  const env = { LOG_LEVEL: 'silent', DATABASE_URL: process.env.DATABASE_URL, DATA_DIR: process.env.DATABASE_URL ? undefined : pgliteCopy(t) }
  const cli = adminOn(env)
  const invoke = (argv: string[]) => cli(...argv)

  t.equal(JSON.parse((await invoke(['key', 'create', '--global'])).stdout).role, 'admin')
  t.equal(JSON.parse((await invoke(['key', 'create', '--global', '--role', 'read'])).stdout).role, 'read')
  const bad = await invoke(['key', 'create', '--global', '--role', 'owner'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--role is read or admin/)
})

t.test('the migration keeps existing global keys admin and makes scoped keys read', async (t) => {
  // On a fresh embedded store in either run: the migrations before roles, two keys, then the rest.
  const db = await openDatabase(loadConfig({ DATA_DIR: pgliteCopy(t, { migrated: false }) }))
  t.teardown(() => db.close())
  const migrations = readMigrations()
  const index = migrations.findIndex((migration) => migration.name.endsWith('_security'))
  t.ok(index > 0)
  await db.withSession(async (session) => {
    await migrate(session, migrations.slice(0, index))
    await session.query(`INSERT INTO api_keys (id, name, key_hash, global, sheet_ids) VALUES ('g', 'g', repeat('a', 64), true, '{}'), ('s', 's', repeat('b', 64), false, '{x}')`)
    await migrate(session, migrations)
    const rows = await session.query<{ id: string; role: string }>('SELECT id, role FROM api_keys ORDER BY id')
    t.same(rows, [{ id: 'g', role: 'admin' }, { id: 's', role: 'read' }])
  })
})
