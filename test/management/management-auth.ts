// Who may see what: 401 without a usable key, 403 (or 404 for a conversion by id) outside a key's
// sheets, and no route or filter that shows another sheet's rows, counts or diagnostics.
// Scoping goes through the typed client against a listening server; malformed credentials through fetch.
import t from 'tap'
import { createClient } from '../../client/src/index.ts'
import { buildApp } from '../../src/app.ts'
import { createApiKey, revokeApiKey } from '../../src/api-keys.ts'
import { capturedLog, deliverAll, listen, newKeyHeader, newSheet, receiverUrl, testConfig } from '../helpers.ts'

const { stream, raw: logLines } = capturedLog()
const app = await buildApp(testConfig(t), { logger: { level: 'trace', stream } })
t.teardown(() => app.close())
await app.ready()

const baseUrl = await listen(app)
const get = async (url: string, headers: Record<string, string> = {}) => {
  const response = await fetch(`${baseUrl}/api/v1/postback${url}`, { headers })
  return { statusCode: response.status, json: (await response.json()) as { error: string; data: Array<{ sheet_id: string }> } }
}

const [sheetA, sheetB] = [await newSheet(app), await newSheet(app, 'EUR')]
const [idA] = await deliverAll(app, [{ sheet_id: sheetA, transaction_id: 'a1', payout: '1.00', campaign_id: 'c' }])
const [idB] = await deliverAll(app, [{ sheet_id: sheetB, transaction_id: 'b1', payout: '2.00', campaign_id: 'c' }])
await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetA, transaction_id: '{x}' }) })
await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetB, transaction_id: '{x}' }) })
const keyA = await newKeyHeader(app, { sheetIds: [sheetA] })
const clientA = createClient({ baseUrl, apiKey: keyA.authorization.slice('Bearer '.length) })

t.test('no key, a malformed header, an unknown key, a revoked key: 401', async (t) => {
  const revoked = await createApiKey(app.prisma, { sheetIds: [sheetA] })
  await revokeApiKey(app.prisma, revoked.id)
  const cases: Array<[string, Record<string, string>]> = [
    ['no header', {}],
    ['not bearer', { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }],
    ['bearer without key', { authorization: 'Bearer ' }],
    ['malformed key', { authorization: 'Bearer hello' }],
    ['unknown key', { authorization: `Bearer pbk_${'A'.repeat(43)}` }],
    ['revoked key', { authorization: `Bearer ${revoked.key}` }],
  ]
  for (const [name, headers] of cases) {
    for (const url of ['/conversions', `/conversions/${idA}`, '/summary?group_by=campaign', '/rejections', `/sheets/${sheetA}/status`, `/sheets/${sheetA}/receiver-url?tracker=generic`, '/admin/sheets']) {
      const response = await get(url, headers)
      t.equal(response.statusCode, 401, `${name}: ${url}`)
      t.equal(response.json.error, 'unauthorized')
    }
  }
})

t.test('the receiver stays public', async (t) => {
  const response = await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheetA, transaction_id: 'public' }) })
  t.equal(response.statusCode, 200)
})

t.test("a key for sheet A never sees sheet B's rows, counts or diagnostics", async (t) => {
  const list = await clientA.GET('/api/v1/postback/conversions')
  t.equal(list.response.status, 200)
  t.ok(list.data?.data.length)
  t.ok(list.data?.data.every((row) => row.sheet_id === sheetA))

  const forbidden = [
    await clientA.GET('/api/v1/postback/conversions', { params: { query: { sheet_id: sheetB } } }),
    await clientA.GET('/api/v1/postback/summary', { params: { query: { group_by: 'campaign', sheet_id: sheetB } } }),
    await clientA.GET('/api/v1/postback/rejections', { params: { query: { sheet_id: sheetB } } }),
    await clientA.GET('/api/v1/postback/sheets/{sheet_id}/status', { params: { path: { sheet_id: sheetB } } }),
    await clientA.GET('/api/v1/postback/sheets/{sheet_id}/receiver-url', { params: { path: { sheet_id: sheetB }, query: { tracker: 'keitaro' } } }),
  ]
  for (const response of forbidden) {
    t.same([response.response.status, response.error?.error], [403, 'forbidden'], response.response.url)
  }
  const other = await clientA.GET('/api/v1/postback/conversions/{id}', { params: { path: { id: idB! } } })
  t.same([other.response.status, other.error?.error], [404, 'not_found'], "another sheet's conversion is not found")
  const own = await clientA.GET('/api/v1/postback/conversions/{id}', { params: { path: { id: idA! } } })
  t.equal(own.data?.sheet_id, sheetA)

  const byTransaction = await clientA.GET('/api/v1/postback/conversions', { params: { query: { transaction_id: 'b1' } } })
  t.same(byTransaction.data?.data, [], 'a filter on a value of sheet B finds nothing')
  const summary = await clientA.GET('/api/v1/postback/summary', { params: { query: { group_by: 'campaign', campaign_id: 'c' } } })
  t.same(summary.data?.data, [{ campaign_id: 'c', currency: 'USD', conversions: 1, revenue: '1.00', pending_conversions: 0, pending_revenue: '0.00', rejected_conversions: 0, rejected_revenue: '0.00' }], 'summary counts sheet A only')
  const rejections = await clientA.GET('/api/v1/postback/rejections')
  t.ok(rejections.data?.data.length)
  t.ok(rejections.data?.data.every((row) => row.sheet_id === sheetA))
})

t.test('a key for two sheets sees both; a global key sees all; admin routes need a global key', async (t) => {
  const both = await newKeyHeader(app, { sheetIds: [sheetA, sheetB] })
  const list = await get('/conversions', both)
  t.same(new Set(list.json.data.map((row: { sheet_id: string }) => row.sheet_id)), new Set([sheetA, sheetB]))
  const global = await newKeyHeader(app, { global: true })
  t.equal((await get(`/conversions/${idB}`, global)).statusCode, 200)
  t.equal((await get('/admin/sheets', global)).statusCode, 200)
  for (const headers of [keyA, both]) {
    const response = await get('/admin/keys', headers)
    t.same([response.statusCode, response.json.error], [403, 'forbidden'])
    const post = await app.inject({ method: 'POST', url: '/api/v1/postback/admin/sheets', headers, payload: { sheet_id: 'x' } })
    t.equal(post.statusCode, 403)
  }
})

t.test('keys never appear in the logs', async (t) => {
  const created = await createApiKey(app.prisma, { global: true })
  await get('/conversions', { authorization: `Bearer ${created.key}` })
  await get('/conversions', { authorization: 'Bearer wrong-key-text' })
  t.ok(logLines.length > 0, 'requests were logged')
  const secret = created.key.slice(4)
  t.notOk(logLines.some((line) => line.includes(secret)), 'the key is not in any log line')
  t.notOk(logLines.some((line) => line.includes('wrong-key-text')), 'a wrong key is not logged either')
  t.notOk(logLines.some((line) => /authorization/i.test(line) && line.includes('Bearer')), 'no Authorization header is logged')
})
