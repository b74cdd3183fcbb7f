// Sheet secrets and address allow-lists: who may deliver to a sheet. A secret is compared as a
// SHA-256 digest in constant time, rotated with a grace period for the previous one, and never
// stored or shown back; an allow-list takes IPv4/IPv6 addresses and CIDRs, and the client address
// is the forwarded one only behind TRUST_PROXY.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { rotateSheetToken } from '../../src/sheet-security.ts'
import { newKeyHeader, newSheet, receiverUrl, testApp } from '../helpers.ts'

const app = await testApp(t, { TRUST_PROXY: '127.0.0.1' })
const admin = await newKeyHeader(app, { global: true })

async function api(method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) {
  const response = await app.inject({ method, url: `/api/v1/postback${url}`, headers: admin, ...(payload === undefined ? {} : { payload }) })
  return { statusCode: response.statusCode, json: response.json() }
}

function deliver(target: FastifyInstance, params: Record<string, string>, options: { remoteAddress?: string; headers?: Record<string, string> } = {}) {
  return target.inject({ method: 'GET', url: receiverUrl(params), ...options })
}

async function rejections(sheetId: string) {
  return (await api('GET', `/rejections?sheet_id=${sheetId}`)).json.data as Array<{ reason: string; raw_query: string; remote_address: string; parameter: string | null }>
}

t.test('a sheet with a secret takes only deliveries that carry it', async (t) => {
  const sheetId = await newSheet(app)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'before' })).statusCode, 200, 'no secret yet: no token needed')

  const rotated = await api('POST', `/admin/sheets/${sheetId}/token`)
  t.equal(rotated.statusCode, 200)
  t.equal(rotated.json.sheet_id, sheetId)
  const token = rotated.json.token as string
  t.match(token, /^pst_[A-Za-z0-9_-]{43}$/)
  const stored = await app.prisma.sheet.findUniqueOrThrow({ where: { sheetId } })
  t.not(stored.tokenHash, token, 'stored hashed')
  t.notOk(JSON.stringify(stored).includes(token), 'the secret is nowhere in the row')
  t.equal((await api('GET', '/admin/sheets')).json.find((s: { sheet_id: string }) => s.sheet_id === sheetId).has_token, true)

  const missing = await deliver(app, { sheet_id: sheetId, transaction_id: 't1' })
  t.equal(missing.statusCode, 403)
  t.same(missing.json(), { error: 'invalid_token', message: missing.json().message, parameter: 'token' })
  const wrong = await deliver(app, { sheet_id: sheetId, transaction_id: 't1', token: `${token.slice(0, -1)}x` })
  t.equal(wrong.statusCode, 403)
  t.equal(wrong.json().error, 'invalid_token')
  // Checked before the parameters: a caller without the secret learns nothing about them.
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: '{clickid}', token: 'nope' })).json().error, 'invalid_token')
  const good = await deliver(app, { sheet_id: sheetId, transaction_id: 't1', token })
  t.equal(good.statusCode, 200, good.body)
  t.equal(good.json().status, 'stored')

  const log = await rejections(sheetId)
  t.equal(log.filter((entry) => entry.reason === 'invalid_token').length, 3)
  for (const entry of log) {
    t.notOk(entry.raw_query.includes(token.slice(4, 20)), 'no part of the secret in the rejection log')
    t.notOk(entry.raw_query.includes('nope'), 'a wrong token is not kept either')
    t.match(entry.raw_query, /token=\[REDACTED\]|^sheet_id=[^&]+&transaction_id=t1$/)
  }

  const cleared = await api('DELETE', `/admin/sheets/${sheetId}/token`)
  t.equal(cleared.statusCode, 200)
  t.equal(cleared.json.has_token, false)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 't2' })).statusCode, 200, 'cleared: no token needed')
  await api('POST', `/admin/sheets/${sheetId}/token`)
  t.equal((await api('POST', `/admin/sheets/${sheetId}/token/clear`)).json.has_token, false, 'POST …/token/clear clears too')
  t.equal((await api('POST', '/admin/sheets/no-such-sheet/token')).statusCode, 404)
})

t.test('after a rotation the previous secret is valid for the grace period only', async (t) => {
  const sheetId = await newSheet(app)
  const first = (await api('POST', `/admin/sheets/${sheetId}/token`)).json.token as string
  const second = await api('POST', `/admin/sheets/${sheetId}/token`, { grace_seconds: 1 })
  t.equal(second.statusCode, 200)
  const secondToken = second.json.token as string
  t.not(secondToken, first)
  t.ok((await api('GET', '/admin/sheets')).json.find((s: { sheet_id: string }) => s.sheet_id === sheetId).previous_token_expires_at)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g1', token: first })).statusCode, 200, 'previous: valid in its grace period')
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g2', token: secondToken })).statusCode, 200, 'new: valid')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  app.sheetSecurity.forget(sheetId)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g3', token: first })).statusCode, 403, 'previous: refused after the grace period')
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g4', token: secondToken })).statusCode, 200)

  // No grace: the previous secret stops at once; a rotation only ever keeps the one before it.
  const third = (await api('POST', `/admin/sheets/${sheetId}/token`, { grace_seconds: 0 })).json.token as string
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g5', token: secondToken })).statusCode, 403)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g6', token: third })).statusCode, 200)
  const fourth = (await api('POST', `/admin/sheets/${sheetId}/token`, { grace_seconds: 60 })).json.token as string
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g7', token: first })).statusCode, 403, 'two rotations ago: refused')
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g8', token: third })).statusCode, 200)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'g9', token: fourth })).statusCode, 200)
  t.equal((await api('POST', `/admin/sheets/${sheetId}/token`, { grace_seconds: -1 })).statusCode, 400)
})

t.test('a change made elsewhere (the CLI, another instance) takes effect within SHEET_SECURITY_TTL_MS', async (t) => {
  // Long enough that a loaded machine's rotation and next delivery still fall within it.
  const other = await testApp(t, { SHEET_SECURITY_TTL_MS: '2500' })
  const sheetId = await newSheet(other)
  t.equal((await deliver(other, { sheet_id: sheetId, transaction_id: 'c1' })).statusCode, 200)
  const { token } = await rotateSheetToken(other.prisma, sheetId)
  t.equal((await deliver(other, { sheet_id: sheetId, transaction_id: 'c2' })).statusCode, 200, 'within the TTL: the cached settings')
  await new Promise((resolve) => setTimeout(resolve, 2600))
  t.equal((await deliver(other, { sheet_id: sheetId, transaction_id: 'c3' })).statusCode, 403, 'after the TTL: the new secret is needed')
  t.equal((await deliver(other, { sheet_id: sheetId, transaction_id: 'c4', token })).statusCode, 200)
})

t.test('an allow-list takes IPv4 and IPv6 addresses and CIDRs; a delivery from elsewhere is refused and logged with its address', async (t) => {
  const sheetId = await newSheet(app)
  const set = await api('POST', `/admin/sheets/${sheetId}/allow`, { addresses: ['203.0.113.0/24', '2001:db8::/32', '198.51.100.7'] })
  t.equal(set.statusCode, 200, JSON.stringify(set.json))
  t.same(set.json.allowed_addresses, ['203.0.113.0/24', '2001:db8::/32', '198.51.100.7'])
  const cases: Array<[string, number]> = [
    ['203.0.113.9', 200],
    ['198.51.100.7', 200],
    ['198.51.100.8', 403],
    ['2001:db8:1234::5', 200],
    ['2001:db9::1', 403],
    ['::ffff:203.0.113.10', 200],
    ['::1', 403],
  ]
  for (const [address, expected] of cases) {
    const response = await deliver(app, { sheet_id: sheetId, transaction_id: `a-${address}` }, { remoteAddress: address })
    t.equal(response.statusCode, expected, `${address}: ${response.body}`)
    if (expected === 403) t.equal(response.json().error, 'address_not_allowed')
  }
  const refused = (await rejections(sheetId)).filter((entry) => entry.reason === 'address_not_allowed').map((entry) => entry.remote_address)
  t.same(refused.sort(), ['198.51.100.8', '2001:db9::1', '::1'].sort(), 'the rejection log shows where deliveries came from')

  for (const bad of ['10.0.0.0/33', '2001:db8::/129', 'example.com', '10.0.0.1/8/1', '300.1.1.1']) {
    const response = await api('POST', `/admin/sheets/${sheetId}/allow`, { addresses: ['10.0.0.1', bad] })
    t.equal(response.statusCode, 400, bad)
    t.equal(response.json.parameter, 'addresses')
    t.ok(response.json.message.includes(JSON.stringify(bad)), `the error names ${bad}`)
  }
  const cleared = await api('DELETE', `/admin/sheets/${sheetId}/allow`)
  t.same(cleared.json.allowed_addresses, [])
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'after-clear' }, { remoteAddress: '192.0.2.1' })).statusCode, 200)
  await api('POST', `/admin/sheets/${sheetId}/allow`, { addresses: ['192.0.2.1'] })
  t.same((await api('POST', `/admin/sheets/${sheetId}/allow/clear`)).json.allowed_addresses, [], 'POST …/allow/clear clears too')
})

t.test('X-Forwarded-For is believed only from a TRUST_PROXY address', async (t) => {
  const sheetId = await newSheet(app)
  await api('POST', `/admin/sheets/${sheetId}/allow`, { addresses: ['203.0.113.0/24'] })
  const forwarded = { 'x-forwarded-for': '203.0.113.50' }
  const viaProxy = await deliver(app, { sheet_id: sheetId, transaction_id: 'x1' }, { remoteAddress: '127.0.0.1', headers: forwarded })
  t.equal(viaProxy.statusCode, 200, 'from the trusted proxy: the forwarded address counts')
  const direct = await deliver(app, { sheet_id: sheetId, transaction_id: 'x2' }, { remoteAddress: '192.0.2.77', headers: forwarded })
  t.equal(direct.statusCode, 403, 'from anyone else: the header is ignored')
  const logged = (await rejections(sheetId)).map((entry) => entry.remote_address)
  t.same(logged, ['192.0.2.77'])

  // Without TRUST_PROXY the header is never believed.
  const untrusting = await testApp(t)
  const other = await newSheet(untrusting)
  const key = await newKeyHeader(untrusting, { global: true })
  await untrusting.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${other}/allow`, headers: key, payload: { addresses: ['203.0.113.0/24'] } })
  t.equal((await deliver(untrusting, { sheet_id: other, transaction_id: 'x3' }, { remoteAddress: '127.0.0.1', headers: forwarded })).statusCode, 403)
})

t.test('a secret and an allow-list together: both are needed', async (t) => {
  const sheetId = await newSheet(app)
  const token = (await api('POST', `/admin/sheets/${sheetId}/token`)).json.token as string
  await api('POST', `/admin/sheets/${sheetId}/allow`, { addresses: ['2001:db8::/48'] })
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'b1', token }, { remoteAddress: '2001:db8::9' })).statusCode, 200)
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'b2', token }, { remoteAddress: '2001:db8:1::9' })).json().error, 'address_not_allowed')
  t.equal((await deliver(app, { sheet_id: sheetId, transaction_id: 'b3' }, { remoteAddress: '2001:db8::9' })).json().error, 'invalid_token')
})
