// Delivery diagnostics, the receiver URL builder, and the admin API, through the typed client
// (@postback-store/client, client/) against a listening server.
import t from 'tap'
import { createClient } from '../../client/src/index.ts'
import { deliverAll, listen, newKeyHeader, newSheet, receiverUrl, testApp, uniqueId } from '../helpers.ts'

const app = await testApp(t, { PUBLIC_BASE_URL: 'https://postback.example.com/' })
const baseUrl = await listen(app)
const admin = await newKeyHeader(app, { global: true })
const api = createClient({ baseUrl, apiKey: admin.authorization.slice('Bearer '.length) })
const deliver = (params: Record<string, string>) => fetch(`${baseUrl}${receiverUrl(params)}`)
const status = (sheetId: string) => api.GET('/api/v1/postback/sheets/{sheet_id}/status', { params: { path: { sheet_id: sheetId } } })

t.test('sheet status: last received, last-24-hour counts by outcome, top rejection reasons', async (t) => {
  const sheet = await newSheet(app)
  t.same((await status(sheet)).data, {
    sheet_id: sheet,
    active: true,
    last_received_at: null,
    last_rejected_at: null,
    last_24h: { stored: 0, updated: 0, duplicate: 0, rejected: 0 },
    top_rejection_reasons: [],
    last_test: null,
  })
  await deliverAll(app, [1, 2, 3].map((i) => ({ sheet_id: sheet, transaction_id: `t${i}` })))
  for (let i = 0; i < 4; i++) await deliver({ sheet_id: sheet, transaction_id: 't1' })
  for (let i = 0; i < 3; i++) await deliver({ sheet_id: sheet, transaction_id: '{clickid}' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', payout: 'abc' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', currency: 'ZZZ' })
  await deliver({ sheet_id: sheet, transaction_id: 'x', currency: 'QQQ' })
  const { data: body, response } = await status(sheet)
  t.equal(response.status, 200)
  t.same(body?.last_24h, { stored: 3, updated: 0, duplicate: 4, rejected: 6 })
  t.same(body?.top_rejection_reasons, [
    { reason: 'unreplaced_macro', count: 3 },
    { reason: 'unknown_currency', count: 2 },
    { reason: 'invalid_parameter', count: 1 },
  ])
  const newest = (await api.GET('/api/v1/postback/conversions', { params: { query: { sheet_id: sheet, limit: 1 } } })).data?.data[0]
  t.equal(body?.last_received_at, newest?.received_at)
  t.ok(Date.parse(body?.last_rejected_at ?? '') >= Date.parse(newest?.received_at ?? ''))
  const unknown = await status(uniqueId('none'))
  t.same([unknown.response.status, unknown.error?.error], [404, 'unknown_sheet'])
})

t.test('the rejection log, paginated, newest first', async (t) => {
  const sheet = await newSheet(app)
  for (let i = 0; i < 7; i++) await deliver({ sheet_id: sheet, transaction_id: `r${i}`, payout: `bad${i}` })
  const seen = []
  let cursor: string | undefined
  do {
    const { data, response } = await api.GET('/api/v1/postback/rejections', { params: { query: { sheet_id: sheet, limit: 3, cursor } } })
    t.equal(response.status, 200)
    if (!data) break
    t.ok(data.data.length <= 3)
    seen.push(...data.data)
    cursor = data.next_cursor ?? undefined
  } while (cursor)
  t.same(seen.map((entry) => new URLSearchParams(entry.raw_query).get('payout')), ['bad6', 'bad5', 'bad4', 'bad3', 'bad2', 'bad1', 'bad0'])
  t.match(seen[0], { sheet_id: sheet, reason: 'invalid_parameter', parameter: 'payout', remote_address: '127.0.0.1' })
})

t.test('receiver URLs carry each tracker’s macros and are refused until the network fills them in', async (t) => {
  const sheet = await newSheet(app)
  const expected = {
    keitaro: ['{subid}', '{revenue}'],
    voluum: ['{externalid}', '{payout}'],
    redtrack: ['{clickid}', '{sum}'],
    binom: ['{clickid}', '{payout}'],
    generic: ['{transaction_id}', '{payout}'],
  } as const
  for (const [tracker, [transaction, payout]] of Object.entries(expected)) {
    const { data, response } = await api.GET('/api/v1/postback/sheets/{sheet_id}/receiver-url', {
      params: { path: { sheet_id: sheet }, query: { tracker: tracker as keyof typeof expected } },
    })
    t.equal(response.status, 200)
    const url = data?.url ?? ''
    t.ok(url.startsWith(`https://postback.example.com/meta/postback/conversion?sheet_id=${sheet}&`), url)
    t.match(url, `transaction_id=${transaction}&payout=${payout}&currency=`)
    const events = tracker === 'redtrack' || tracker === 'generic' ? ['event'] : []
    t.same(Object.keys(data?.parameters ?? {}), ['transaction_id', 'payout', 'currency', 'status', ...events, 'campaign_id', 'adset_id', 'ad_id'])
    // Pasted unchanged (macros unreplaced), the receiver says so.
    const pasted = await fetch(url.replace('https://postback.example.com', baseUrl))
    t.same([pasted.status, ((await pasted.json()) as { error: string }).error], [400, 'unreplaced_macro'], `${tracker}: unreplaced macros refused`)
  }
  const bad = await fetch(`${baseUrl}/api/v1/postback/sheets/${sheet}/receiver-url?tracker=myspace`, { headers: admin })
  const badBody = (await bad.json()) as { parameter: string; message: string }
  t.same([bad.status, badBody.parameter], [400, 'tracker'])
  t.match(badBody.message, 'keitaro, voluum, redtrack, binom, generic')
  const unknown = await api.GET('/api/v1/postback/sheets/{sheet_id}/receiver-url', { params: { path: { sheet_id: uniqueId('none') }, query: { tracker: 'generic' } } })
  t.same([unknown.response.status, unknown.error?.error], [404, 'unknown_sheet'])
})

t.test('admin API: sheets and keys', async (t) => {
  const id = uniqueId('api-sheet')
  const created = await api.POST('/api/v1/postback/admin/sheets', { body: { sheet_id: id, name: 'From the API', currency: 'chf' } })
  t.equal(created.response.status, 201)
  t.match(created.data, { sheet_id: id, name: 'From the API', default_currency: 'CHF', active: true })
  const again = await api.POST('/api/v1/postback/admin/sheets', { body: { sheet_id: id } })
  t.same([again.response.status, again.error?.error], [409, 'sheet_exists'])
  const invalid = await api.POST('/api/v1/postback/admin/sheets', { body: { sheet_id: 'has space' } })
  t.same([invalid.response.status, invalid.error?.parameter], [400, 'sheet_id'])
  t.ok((await api.GET('/api/v1/postback/admin/sheets')).data?.some((sheet) => sheet.sheet_id === id))

  const key = await api.POST('/api/v1/postback/admin/keys', { body: { name: 'reporting', sheet_ids: [id] } })
  t.equal(key.response.status, 201)
  t.match(key.data, { name: 'reporting', global: false, sheet_ids: [id], revoked_at: null })
  t.match(key.data?.key, /^pbk_[A-Za-z0-9_-]{43}$/)
  const scoped = createClient({ baseUrl, apiKey: key.data?.key })
  const scopedStatus = () => scoped.GET('/api/v1/postback/sheets/{sheet_id}/status', { params: { path: { sheet_id: id } } })
  t.equal((await scopedStatus()).response.status, 200)
  const listed = (await api.GET('/api/v1/postback/admin/keys')).data?.find((entry) => entry.id === key.data?.id)
  t.ok(listed)
  t.notOk(listed && 'key' in listed, 'a listed key does not show the key')

  for (const body of [{}, { global: true, sheet_ids: [id] }, { sheet_ids: [uniqueId('none')] }]) {
    const refused = await api.POST('/api/v1/postback/admin/keys', { body })
    t.ok([400, 404].includes(refused.response.status), `refused: ${JSON.stringify(body)} → ${refused.response.status}`)
    t.equal(refused.error?.parameter, 'sheet_ids')
  }

  const revoked = await api.POST('/api/v1/postback/admin/keys/{key_id}/revoke', { params: { path: { key_id: key.data?.id ?? '' } } })
  t.equal(revoked.response.status, 200)
  t.ok(revoked.data?.revoked_at)
  t.equal((await scopedStatus()).response.status, 401, 'a revoked key is refused at once')
  const unknownKey = await api.POST('/api/v1/postback/admin/keys/{key_id}/revoke', { params: { path: { key_id: 'key_0000' } } })
  t.equal(unknownKey.response.status, 404)

  const disabled = await api.POST('/api/v1/postback/admin/sheets/{sheet_id}/disable', { params: { path: { sheet_id: id } } })
  t.match(disabled.data, { sheet_id: id, active: false })
  t.equal((await deliver({ sheet_id: id, transaction_id: 'after' })).status, 404)
})
