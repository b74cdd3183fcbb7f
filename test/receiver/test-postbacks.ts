// Test postbacks (`test=1`): every check of a real delivery, nothing stored or counted; the sheet's
// status shows the newest test and its outcome, and refused tests are in the rejection log as tests.
import t from 'tap'
import { deliverAll, newKeyHeader, newSheet, receiverUrl, testApp } from '../helpers.ts'

const app = await testApp(t)
const admin = await newKeyHeader(app, { global: true })
const get = async (url: string) => (await app.inject({ method: 'GET', url: `/api/v1/postback${url}`, headers: admin })).json()
const deliver = (params: Record<string, string>, remoteAddress?: string) =>
  app.inject({ method: 'GET', url: receiverUrl(params), ...(remoteAddress ? { remoteAddress } : {}) })

/** Everything a test postback must leave as it was. */
async function numbers(sheetId: string) {
  return {
    conversions: await app.prisma.conversion.count({ where: { sheetId } }),
    summary: await get(`/summary?sheet_id=${sheetId}&group_by=campaign`),
    last24h: (await get(`/sheets/${sheetId}/status`)).last_24h,
    counters: await app.prisma.deliveryCounter.count({ where: { sheetId } }),
  }
}

t.test('a passing test postback answers test and stores or counts nothing', async (t) => {
  const sheetId = await newSheet(app)
  await deliverAll(app, [{ sheet_id: sheetId, transaction_id: 'real', payout: '5', campaign_id: 'c' }])
  t.equal((await get(`/sheets/${sheetId}/status`)).last_test, null, 'no test yet')
  const before = await numbers(sheetId)

  const response = await deliver({ sheet_id: sheetId, transaction_id: 'T-1', payout: '12.50', campaign_id: 'c', test: '1' })
  t.equal(response.statusCode, 200, response.body)
  t.same(response.json(), { status: 'test', conversion_status: 'approved' })
  const mapped = await deliver({ sheet_id: sheetId, transaction_id: 'T-2', status: '2', pending_status: '2', test: '1' })
  t.same(mapped.json(), { status: 'test', conversion_status: 'pending' }, 'the lifecycle mapping is applied')
  // A test repeating a stored conversion's key does not touch it either.
  t.same((await deliver({ sheet_id: sheetId, transaction_id: 'real', status: 'chargeback', test: '1' })).json(), { status: 'test', conversion_status: 'rejected' })
  // The flag's other spellings (the document lists 1, 0, true, false).
  t.same((await deliver({ sheet_id: sheetId, transaction_id: 'T-3', test: 'TRUE' })).json(), { status: 'test', conversion_status: 'approved' })

  t.same(await numbers(sheetId), before, 'nothing stored or counted')
  t.equal((await app.prisma.conversion.findFirstOrThrow({ where: { sheetId, transactionId: 'real' } })).status, 'approved')
  t.equal((await deliver({ sheet_id: sheetId, transaction_id: 'F-1', test: 'false' })).json().status, 'stored', 'test=false is a real delivery')
  const status = await get(`/sheets/${sheetId}/status`)
  t.equal(status.last_test.outcome, 'ok')
  t.ok(Date.now() - Date.parse(status.last_test.received_at) < 60_000)
  t.equal((await deliver({ sheet_id: sheetId, transaction_id: 'T-3', test: '0' })).json().status, 'stored', 'test=0 is a real delivery')
})

t.test('a refused test postback gets the real error, is logged as a test, and is not counted', async (t) => {
  const sheetId = await newSheet(app)
  const before = await numbers(sheetId)
  const macro = await deliver({ sheet_id: sheetId, transaction_id: '{clickid}', test: '1' })
  t.equal(macro.statusCode, 400)
  t.equal(macro.json().error, 'unreplaced_macro')
  t.equal((await get(`/sheets/${sheetId}/status`)).last_test.outcome, 'unreplaced_macro')

  const token = (await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${sheetId}/token`, headers: admin })).json().token as string
  const noToken = await deliver({ sheet_id: sheetId, transaction_id: 'T-1', test: '1' })
  t.equal(noToken.statusCode, 403)
  t.equal(noToken.json().error, 'invalid_token')
  t.equal((await get(`/sheets/${sheetId}/status`)).last_test.outcome, 'invalid_token')
  await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${sheetId}/allow`, headers: admin, payload: { addresses: ['192.0.2.0/24'] } })
  t.equal((await deliver({ sheet_id: sheetId, transaction_id: 'T-1', test: '1', token }, '198.51.100.1')).json().error, 'address_not_allowed')
  t.equal((await deliver({ sheet_id: sheetId, transaction_id: 'T-1', test: '1', token }, '192.0.2.1')).json().status, 'test')
  t.equal((await get(`/sheets/${sheetId}/status`)).last_test.outcome, 'ok')
  t.equal((await deliver({ sheet_id: sheetId, transaction_id: 'T-1', test: 'yes', token }, '192.0.2.1')).json().parameter, 'test', 'a malformed flag is refused')

  const log = (await get(`/rejections?sheet_id=${sheetId}`)).data as Array<{ reason: string; test: boolean }>
  t.same(log.map((entry) => [entry.reason, entry.test]), [['invalid_parameter', true], ['address_not_allowed', true], ['invalid_token', true], ['unreplaced_macro', true]])
  t.same(await numbers(sheetId), before, 'refused tests are not counted')
  // A real refused delivery is logged as not a test.
  await deliver({ sheet_id: sheetId, transaction_id: 'T-9' })
  t.equal((await get(`/rejections?sheet_id=${sheetId}`)).data[0].test, false)
})

t.test('a test postback to an unknown or disabled sheet gets 404', async (t) => {
  t.equal((await deliver({ sheet_id: 'no-such-sheet-xyz', transaction_id: 'T', test: '1' })).json().error, 'unknown_sheet')
  const sheetId = await newSheet(app)
  await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${sheetId}/disable`, headers: admin })
  const response = await deliver({ sheet_id: sheetId, transaction_id: 'T', test: '1' })
  t.equal(response.statusCode, 404)
  t.equal((await get(`/sheets/${sheetId}/status`)).last_test.outcome, 'unknown_sheet')
})
