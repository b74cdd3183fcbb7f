// postback-admin sheet token / sheet allow: the secret printed once and working at the receiver,
// rotation with --grace, --clear, and an invalid address named.
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { openDatabase } from '../../src/database.ts'
import { adminOn, pgliteCopy, receiverUrl, testApp, uniqueId } from '../helpers.ts'

const dataDir = process.env.DATABASE_URL ? undefined : pgliteCopy(t)
const env = { LOG_LEVEL: 'silent', DATABASE_URL: process.env.DATABASE_URL, DATA_DIR: dataDir }

// The commands share one open store (a PGlite open costs about 0.3 s of CPU; test/store/cli.ts has
// the commands that open their own), closed before the app opens the same embedded folder.
const store = await openDatabase(loadConfig(env))
t.teardown(() => store.close())
const cli = adminOn(env, store)
const admin = (argv: string[]) => cli(...argv)

t.test('sheet token and sheet allow', async (t) => {
  const sheetId = uniqueId('cli')
  t.equal((await admin(['sheet', 'create', '--id', sheetId])).code, 0)
  const first = await admin(['sheet', 'token', sheetId])
  t.equal(first.code, 0, first.stderr)
  t.same(Object.keys(first.result).sort(), ['sheet_id', 'token'])
  t.equal(first.result.sheet_id, sheetId)
  const second = await admin(['sheet', 'token', sheetId, '--grace', '3600'])
  t.not(second.result.token, first.result.token)
  t.equal((await admin(['sheet', 'token', sheetId, '--grace', 'soon'])).code, 2)

  const bad = await admin(['sheet', 'allow', sheetId, '--addresses', '203.0.113.0/24,10.0.0.0/40'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /"10\.0\.0\.0\/40" is not an IPv4 or IPv6 address or CIDR/)
  const allowed = await admin(['sheet', 'allow', sheetId, '--addresses', '127.0.0.1, 2001:db8::/32'])
  t.same(allowed.result.allowed_addresses, ['127.0.0.1', '2001:db8::/32'])
  t.equal((await admin(['sheet', 'allow', sheetId])).code, 2, 'needs --addresses or --clear')
  const listed = (await admin(['sheet', 'list'])).result.find((sheet: { sheet_id: string }) => sheet.sheet_id === sheetId)
  t.equal(listed.has_token, true)
  t.ok(listed.previous_token_expires_at)
  t.notOk(JSON.stringify(listed).includes(second.result.token), 'the list never shows the secret')

  // The receiver takes both secrets during the grace period (the embedded folder opens in one place at a time).
  await store.close()
  const app = await testApp(t, dataDir ? { DATA_DIR: dataDir } : {})
  for (const token of [first.result.token, second.result.token]) {
    t.equal((await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetId, transaction_id: token.slice(-8), token }) })).statusCode, 200)
  }
  t.equal((await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetId, transaction_id: 'none' }) })).json().error, 'invalid_token')
  t.equal((await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetId, transaction_id: 'far', token: second.result.token }), remoteAddress: '192.0.2.1' })).json().error, 'address_not_allowed')
  await app.close()

  const reopened = adminOn(env)
  t.equal((await reopened('sheet', 'token', sheetId, '--clear')).result.has_token, false)
  t.same((await reopened('sheet', 'allow', sheetId, '--clear')).result.allowed_addresses, [])
  t.equal((await reopened('sheet', 'token', 'no-such-sheet')).code, 1)
})
