// Delivery diagnostics, the receiver URL builder, and the admin API.
import t from 'tap'
import { deliverAll, newKeyHeader, newSheet, receiverUrl, testApp, uniqueId } from './helpers.ts'

const app = await testApp(t, { PUBLIC_BASE_URL: 'https://postback.example.com/' })
const admin = await newKeyHeader(app, { global: true })
const call = async (method: 'GET' | 'POST', url: string, payload?: object, headers = admin) => {
  const response = await app.inject({ method, url: `/api/v1/postback${url}`, headers, payload })
  return { status: response.statusCode, body: response.json() }
}
const get = (url: string) => call('GET', url)
const deliver = (params: Record<string, string>) => app.inject({ method: 'GET', url: receiverUrl(params) })

t.test('sheet status: last received, last-24-hour counts by outcome, top rejection reasons', async (t) => {
  const sheet = await newSheet(app)
  const empty = await get(`/sheets/${sheet}/status`)
  t.same(empty.body, {
    sheet_id: sheet,
    active: true,
    last_received_at: null,
    last_rejected_at: null,
    last_24h: { stored: 0, duplicate: 0, rejected: 0 },
    top_rejection_reasons: [],
  })
  await deliverAll(app, [1, 2, 3].map((i) => ({ sheet_id: sheet, transaction_id: `t${i}` })))
  for (let i = 0; i < 4; i++) await deliver({ sheet_id: sheet, transaction_id: 't1' })
  for (let i = 0; i < 3; i++) await deliver({ sheet_id: sheet, transaction_id: '{clickid}' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', payout: 'abc' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', currency: 'ZZZ' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', currency: 'QQQ' })
  const { status, body } = await get(`/sheets/${sheet}/status`)
  t.equal(status, 200)
  t.same(body.last_24h, { stored: 3, duplicate: 4, rejected: 6 })
  t.same(body.top_rejection_reasons, [
    { reason: 'unreplaced_macro', count: 3 },
    { reason: 'unknown_currency', count: 2 },
    { reason: 'invalid_parameter', count: 1 },
  ])
  const [newest] = (await get(`/conversions?sheet_id=${sheet}&limit=1`)).body.data
  t.equal(body.last_received_at, newest.received_at)
  t.ok(Date.parse(body.last_rejected_at) >= Date.parse(newest.received_at))
  const unknown = await get(`/sheets/${uniqueId('none')}/status`)
  t.same([unknown.status, unknown.body.error], [404, 'unknown_sheet'])
})

t.test('the rejection log, paginated, newest first', async (t) => {
  const sheet = await newSheet(app)
  for (let i = 0; i < 7; i++) await deliver({ sheet_id: sheet, transaction_id: `r${i}`, payout: `bad${i}` })
  const seen: Array<{ raw_query: string; reason: string; parameter: string; sheet_id: string; id: string; remote_address: string }> = []
  let cursor: string | null = null
  do {
    const { status, body }: { status: number; body: { data: typeof seen; next_cursor: string | null } } = await get(
      `/rejections?sheet_id=${sheet}&limit=3${cursor ? `&cursor=${cursor}` : ''}`,
    )
    t.equal(status, 200)
    t.ok(body.data.length <= 3)
    seen.push(...body.data)
    cursor = body.next_cursor
  } while (cursor)
  t.same(seen.map((entry) => new URLSearchParams(entry.raw_query).get('payout')), ['bad6', 'bad5', 'bad4', 'bad3', 'bad2', 'bad1', 'bad0'])
  t.match(seen[0], { sheet_id: sheet, reason: 'invalid_parameter', parameter: 'payout', remote_address: '127.0.0.1' })
})

t.test('receiver URLs carry each tracker’s macros and are refused until the network fills them in', async (t) => {
  const sheet = await newSheet(app)
  const expected = {
    keitaro: ['{click_id}', '{revenue}'],
    voluum: ['${click_id}', '${payout}'],
    redtrack: ['{clickid}', '{sum}'],
    binom: ['{clickid}', '{payout}'],
    generic: ['{transaction_id}', '{payout}'],
  }
  for (const [tracker, [transaction, payout]] of Object.entries(expected)) {
    const { status, body } = await get(`/sheets/${sheet}/receiver-url?tracker=${tracker}`)
    t.equal(status, 200)
    t.ok(body.url.startsWith(`https://postback.example.com/meta/postback/conversion?sheet_id=${sheet}&`), body.url)
    t.match(body.url, `transaction_id=${transaction}&payout=${payout}&currency=`)
    t.same(Object.keys(body.parameters), ['transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id'])
    // Pasted unchanged (macros unreplaced), the receiver says so.
    const response = await app.inject({ method: 'GET', url: body.url.replace('https://postback.example.com', '') })
    t.same([response.statusCode, response.json().error], [400, 'unreplaced_macro'], `${tracker}: unreplaced macros refused`)
  }
  const bad = await get(`/sheets/${sheet}/receiver-url?tracker=myspace`)
  t.same([bad.status, bad.body.parameter], [400, 'tracker'])
  t.match(bad.body.message, 'keitaro, voluum, redtrack, binom, generic')
  const unknown = await get(`/sheets/${uniqueId('none')}/receiver-url?tracker=generic`)
  t.same([unknown.status, unknown.body.error], [404, 'unknown_sheet'])
})

t.test('admin API: sheets and keys', async (t) => {
  const id = uniqueId('api-sheet')
  const created = await call('POST', '/admin/sheets', { sheet_id: id, name: 'From the API', currency: 'chf' })
  t.equal(created.status, 201)
  t.match(created.body, { sheet_id: id, name: 'From the API', default_currency: 'CHF', active: true })
  const again = await call('POST', '/admin/sheets', { sheet_id: id })
  t.same([again.status, again.body.error], [409, 'sheet_exists'])
  const invalid = await call('POST', '/admin/sheets', { sheet_id: 'has space' })
  t.same([invalid.status, invalid.body.parameter], [400, 'sheet_id'])
  t.ok((await get('/admin/sheets')).body.some((sheet: { sheet_id: string }) => sheet.sheet_id === id))

  const key = await call('POST', '/admin/keys', { name: 'reporting', sheet_ids: [id] })
  t.equal(key.status, 201)
  t.match(key.body, { name: 'reporting', global: false, sheet_ids: [id], revoked_at: null })
  t.match(key.body.key, /^pbk_[A-Za-z0-9_-]{43}$/)
  const scoped = { authorization: `Bearer ${key.body.key}` }
  t.equal((await call('GET', `/sheets/${id}/status`, undefined, scoped)).status, 200)
  const listed = (await get('/admin/keys')).body.find((entry: { id: string }) => entry.id === key.body.id)
  t.notOk('key' in listed, 'a listed key does not show the key')

  for (const body of [{}, { global: true, sheet_ids: [id] }, { sheet_ids: [uniqueId('none')] }]) {
    const refused = await call('POST', '/admin/keys', body)
    t.ok([400, 404].includes(refused.status), `refused: ${JSON.stringify(body)} → ${refused.status}`)
    t.equal(refused.body.parameter, 'sheet_ids')
  }

  const revoked = await call('POST', `/admin/keys/${key.body.id}/revoke`)
  t.equal(revoked.status, 200)
  t.ok(revoked.body.revoked_at)
  t.equal((await call('GET', `/sheets/${id}/status`, undefined, scoped)).status, 401, 'a revoked key is refused at once')
  t.same((await call('POST', `/admin/keys/key_0000/revoke`)).status, 404)

  const disabled = await call('POST', `/admin/sheets/${id}/disable`)
  t.match(disabled.body, { sheet_id: id, active: false })
  const refused = await deliver({ sheet_id: id, transaction_id: 'after' })
  t.equal(refused.statusCode, 404)
})
