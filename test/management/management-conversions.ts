// The conversion list (filters, keyset paging in both orders while deliveries arrive) and the
// summary, through the typed client (@postback-store/client, client/) against a listening server; requests
// that the client's types rule out (bad parameters) go through plain fetch.
import t from 'tap'
import { createClient, type operations } from '../../client/src/index.ts'
import { deliverAll, listen, newKeyHeader, newSheet, testApp } from '../helpers.ts'

const app = await testApp(t)
const baseUrl = await listen(app)
const admin = await newKeyHeader(app, { global: true })
const api = createClient({ baseUrl, apiKey: admin.authorization.slice('Bearer '.length) })

type ListQuery = NonNullable<operations['listConversions']['parameters']['query']>
type SummaryQuery = operations['getSummary']['parameters']['query']

const list = (query: ListQuery) => api.GET('/api/v1/postback/conversions', { params: { query } })
const summary = (query: SummaryQuery) => api.GET('/api/v1/postback/summary', { params: { query } })
type Item = NonNullable<Awaited<ReturnType<typeof list>>['data']>['data'][number]

/** A raw GET, for requests the typed client would not let through. */
async function rawGet(path: string) {
  const response = await fetch(`${baseUrl}/api/v1/postback${path}`, { headers: admin })
  return { status: response.status, body: (await response.json()) as { error?: string; parameter?: string; message?: string } }
}

async function pageThrough(query: ListQuery, onPage?: (page: number) => Promise<void>): Promise<Item[]> {
  const items: Item[] = []
  let cursor: string | undefined
  for (let page = 0; page < 1000; page++) {
    const { data, error } = await list({ ...query, cursor })
    if (!data) throw new Error(JSON.stringify(error))
    items.push(...data.data)
    cursor = data.next_cursor ?? undefined
    if (!cursor) return items
    await onPage?.(page)
  }
  throw new Error('paging did not end')
}

t.test('an item carries every field, ids and decimals as strings, times in UTC', async (t) => {
  const sheet = await newSheet(app)
  const [id] = await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'full', payout: '0.10', currency: 'gbp', campaign_id: '1', adset_id: '2', ad_id: '3' }])
  const { data: body } = await list({ sheet_id: sheet })
  if (!body?.data[0]) throw new Error('no row')
  t.equal(body.next_cursor, null)
  t.same(Object.keys(body.data[0]).sort(), ['ad_id', 'adset_id', 'campaign_id', 'currency', 'event', 'id', 'network_status', 'payout', 'received_at', 'sheet_id', 'status', 'transaction_id', 'updated_at'])
  t.match(body.data[0], { id, sheet_id: sheet, transaction_id: 'full', payout: '0.10', currency: 'GBP', campaign_id: '1', adset_id: '2', ad_id: '3' })
  t.same([body.data[0].event, body.data[0].status, body.data[0].network_status, body.data[0].updated_at], [null, 'approved', null, null], 'a base conversion sent without status')
  t.match(body.data[0].received_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  t.ok(Math.abs(Date.parse(body.data[0].received_at) - Date.now()) < 60_000)
  const one = await api.GET('/api/v1/postback/conversions/{id}', { params: { path: { id: id! } } })
  t.same(one.data, body.data[0])
  const missing = await api.GET('/api/v1/postback/conversions/{id}', { params: { path: { id: '999999999999' } } })
  t.same([missing.response.status, missing.error?.error], [404, 'not_found'])
  const bad = await rawGet('/conversions/abc')
  t.same([bad.status, bad.body.error, bad.body.parameter], [400, 'invalid_parameter', 'id'])
})

t.test('paging with small pages, both orders, while new deliveries arrive: no row twice, every row stored before the walk', async (t) => {
  const sheet = await newSheet(app)
  const initial = await deliverAll(app, Array.from({ length: 300 }, (_, i) => ({ sheet_id: sheet, transaction_id: `p${i}`, payout: `${i}` })))
  let extra = 0
  const arrive = async () => {
    await deliverAll(app, Array.from({ length: 3 }, () => ({ sheet_id: sheet, transaction_id: `late${extra++}` })))
  }
  for (const order of ['desc', 'asc'] as const) {
    const seen = await pageThrough({ sheet_id: sheet, limit: 7, order }, arrive)
    const ids = seen.map((item) => item.id)
    t.equal(new Set(ids).size, ids.length, `${order}: no row twice`)
    for (const id of initial) t.ok(ids.includes(id), `${order}: row ${id} seen`)
    const times = seen.map((item) => `${item.received_at}|${item.id.padStart(20, '0')}`)
    const sorted = [...times].sort()
    t.same(times, order === 'asc' ? sorted : sorted.reverse(), `${order}: in order`)
  }
  t.ok(extra > 0, `${extra} deliveries arrived while paging`)
})

t.test('a key of several sheets pages through all of them without sheet_id: each row once, in order, filters applied', async (t) => {
  const sheets = [await newSheet(app), await newSheet(app), await newSheet(app)]
  const key = await newKeyHeader(app, { sheetIds: sheets })
  const scoped = createClient({ baseUrl, apiKey: key.authorization.slice('Bearer '.length) })
  const ids: string[] = []
  for (let round = 0; round < 8; round++) {
    // Each round's deliveries to the three sheets share a batch, so rows of different sheets share a time.
    ids.push(...(await deliverAll(app, sheets.map((sheet_id, i) => ({ sheet_id, transaction_id: `m${round}`, currency: (round + i) % 2 ? 'EUR' : 'USD' })))))
  }
  for (const order of ['desc', 'asc'] as const) {
    for (const currency of [undefined, 'EUR'] as const) {
      const seen: Item[] = []
      let cursor: string | undefined
      for (let page = 0; page < 100; page++) {
        const { data } = await scoped.GET('/api/v1/postback/conversions', { params: { query: { limit: 5, order, cursor, ...(currency && { currency }) } } })
        seen.push(...(data?.data ?? []))
        cursor = data?.next_cursor ?? undefined
        if (!cursor) break
      }
      const label = `${order}${currency ? `, ${currency} only` : ''}`
      t.equal(new Set(seen.map((item) => item.id)).size, seen.length, `${label}: no row twice`)
      t.equal(seen.length, currency ? 12 : 24, `${label}: every row of the three sheets`)
      t.ok(seen.every((item) => sheets.includes(item.sheet_id) && (!currency || item.currency === currency)), `${label}: only the key's sheets and the filter`)
      const times = seen.map((item) => `${item.received_at}|${item.id.padStart(20, '0')}`)
      const sorted = [...times].sort()
      t.same(times, order === 'asc' ? sorted : sorted.reverse(), `${label}: in order`)
    }
  }
  t.equal(ids.length, 24)
})

t.test('rows of one batch share received_at; paging by (received_at, id) still yields each once, in order', async (t) => {
  const sheet = await newSheet(app)
  const burst = await Promise.all(
    Array.from({ length: 40 }, (_, i) => app.inject({ method: 'GET', url: `/meta/postback/conversion?sheet_id=${sheet}&transaction_id=b${i}` })),
  )
  const ids = burst.map((response) => response.json().conversion_id as string)
  for (const order of ['desc', 'asc'] as const) {
    const seen = await pageThrough({ sheet_id: sheet, limit: 3, order })
    t.ok(new Set(seen.map((item) => item.received_at)).size < seen.length, 'some rows share a received_at')
    const numeric = [...ids].map(BigInt).sort((a, b) => (a < b ? -1 : 1)).map(String)
    t.same(seen.map((item) => item.id), order === 'asc' ? numeric : numeric.reverse(), `${order}: every row once, by id within a time`)
  }
})

t.test('filters', async (t) => {
  const [sheet, other] = [await newSheet(app), await newSheet(app)]
  await deliverAll(app, [
    { sheet_id: sheet, transaction_id: 'f1', campaign_id: 'c1', adset_id: 's1', ad_id: 'a1', currency: 'EUR' },
    { sheet_id: sheet, transaction_id: 'f2', campaign_id: 'c1', adset_id: 's2', ad_id: 'a2' },
    { sheet_id: sheet, transaction_id: 'f3', campaign_id: 'c2', adset_id: 's3', ad_id: 'a3' },
    { sheet_id: other, transaction_id: 'f1', campaign_id: 'c1' },
  ])
  const txs = async (query: ListQuery) => ((await list(query)).data?.data ?? []).map((item) => item.transaction_id).sort()
  t.same(await txs({ sheet_id: sheet }), ['f1', 'f2', 'f3'])
  t.same(await txs({ sheet_id: sheet, campaign_id: 'c1' }), ['f1', 'f2'])
  t.same(await txs({ sheet_id: sheet, adset_id: 's2' }), ['f2'])
  t.same(await txs({ sheet_id: sheet, ad_id: 'a3' }), ['f3'])
  t.same(await txs({ sheet_id: sheet, currency: 'eur' }), ['f1'])
  t.same(await txs({ sheet_id: sheet, transaction_id: 'f2' }), ['f2'])
  t.same(await txs({ campaign_id: 'c1', transaction_id: 'f1' }), ['f1', 'f1'], 'without sheet_id: every sheet the key sees')
  const all = (await list({ sheet_id: sheet })).data?.data ?? []
  const oldest = all.at(-1)!.received_at
  t.equal(all.at(-1)!.transaction_id, 'f1')
  t.same(await txs({ sheet_id: sheet, from: oldest }), ['f1', 'f2', 'f3'], 'from is inclusive')
  t.same(await txs({ sheet_id: sheet, to: oldest }), [], 'to is exclusive')
  const after = new Date(Date.parse(oldest) + 1).toISOString()
  t.notOk((await txs({ sheet_id: sheet, from: after })).includes('f1'))
  t.same(await txs({ sheet_id: sheet, from: '2000-01-01', to: '2000-01-02' }), [])
})

t.test('bad list parameters get 400 naming the parameter', async (t) => {
  const cases: Array<[string, string]> = [
    ['limit=0', 'limit'],
    ['limit=501', 'limit'],
    ['limit=ten', 'limit'],
    ['order=sideways', 'order'],
    ['from=yesterday', 'from'],
    ['to=2026-01-01T10:00', 'to'],
    ['cursor=garbage', 'cursor'],
    ['currency=EURO', 'currency'],
    ['bogus=1', 'bogus'],
  ]
  for (const [query, parameter] of cases) {
    const { status, body } = await rawGet(`/conversions?${query}`)
    t.same([status, body.error, body.parameter], [400, 'invalid_parameter', parameter], query)
  }
  const sheet = await newSheet(app)
  await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'x' }, { sheet_id: sheet, transaction_id: 'y' }])
  const { data } = await list({ sheet_id: sheet, limit: 1, order: 'desc' })
  const reused = await list({ sheet_id: sheet, limit: 1, order: 'asc', cursor: data?.next_cursor ?? '' })
  t.same([reused.response.status, reused.error?.parameter], [400, 'cursor'], 'a cursor is bound to its order')
})

t.test('summary figures equal sums computed from the rows sent, per currency', async (t) => {
  const sheet = await newSheet(app, 'USD')
  const sent = Array.from({ length: 60 }, (_, i) => ({
    sheet_id: sheet,
    transaction_id: `s${i}`,
    campaign_id: `c${i % 3}`,
    adset_id: `c${i % 3}-s${i % 2}`,
    ad_id: `c${i % 3}-s${i % 2}-a${i % 4}`,
    currency: ['USD', 'EUR', ''][i % 3 === 0 ? i % 2 : 2]!,
    payout: i % 5 === 0 ? '' : `${i}.${String(i * 7).padStart(2, '0').slice(0, 2)}0001`,
  }))
  await deliverAll(app, sent)
  // Expected figures, in integer millionths so that no float rounding creeps in.
  const micros = (payout: string) => (payout ? BigInt(payout.replace('.', '')) : 0n)
  for (const groupBy of ['campaign', 'adset', 'ad'] as const) {
    const expected = new Map<string, { conversions: number; revenue: bigint }>()
    for (const row of sent) {
      const currency = row.currency || 'USD'
      const group = { campaign: [row.campaign_id], adset: [row.campaign_id, row.adset_id], ad: [row.campaign_id, row.adset_id, row.ad_id] }[groupBy]
      const key = JSON.stringify([...group, currency])
      const entry = expected.get(key) ?? { conversions: 0, revenue: 0n }
      entry.conversions++
      entry.revenue += micros(row.payout)
      expected.set(key, entry)
    }
    const { data: body, response } = await summary({ sheet_id: sheet, group_by: groupBy })
    t.equal(response.status, 200)
    if (!body) throw new Error('no summary')
    t.equal(body.data.length, expected.size, `${groupBy}: one row per group and currency`)
    for (const row of body.data) {
      const group = { campaign: [row.campaign_id], adset: [row.campaign_id, row.adset_id], ad: [row.campaign_id, row.adset_id, row.ad_id] }[groupBy]
      const want = expected.get(JSON.stringify([...group, row.currency]))
      t.ok(want, `${groupBy}: group ${JSON.stringify(group)} ${row.currency} expected`)
      t.equal(row.conversions, want?.conversions)
      t.equal(micros(row.revenue), want?.revenue, `${groupBy}: revenue ${row.revenue}`)
    }
  }
  const adRow = (await summary({ sheet_id: sheet, group_by: 'ad' })).data?.data[0] ?? {}
  t.same(Object.keys(adRow).sort(), ['ad_id', 'adset_id', 'campaign_id', 'conversions', 'currency', 'pending_conversions', 'pending_revenue', 'rejected_conversions', 'rejected_revenue', 'revenue'], 'an ad row names its ad set and campaign')
  const noPayout = await newSheet(app)
  await deliverAll(app, [{ sheet_id: noPayout, transaction_id: 'n', campaign_id: 'c' }])
  t.same((await summary({ sheet_id: noPayout, group_by: 'campaign' })).data?.data, [{ campaign_id: 'c', currency: 'USD', conversions: 1, revenue: '0.00', pending_conversions: 0, pending_revenue: '0.00', rejected_conversions: 0, rejected_revenue: '0.00' }])
})

t.test('day buckets follow the requested time zone across a day boundary', async (t) => {
  const sheet = await newSheet(app)
  // Fixture rows with chosen times: 2026-03-01 03:30 UTC is still 28 February in New York (UTC-5)
  // and already 1 March in Tokyo; 2026-03-01 12:00 UTC is 1 March everywhere here.
  const rows = [
    { transactionId: 'late-evening-ny', receivedAt: new Date('2026-03-01T03:30:00Z'), payout: '10.50' },
    { transactionId: 'noon-utc', receivedAt: new Date('2026-03-01T12:00:00Z'), payout: '1.25' },
    { transactionId: 'before-midnight-utc', receivedAt: new Date('2026-02-28T23:59:59.999Z'), payout: '2' },
  ]
  await app.prisma.conversion.createMany({ data: rows.map((row) => ({ ...row, sheetId: sheet, currency: 'USD', campaignId: 'c' })) })
  const days = async (tz?: string) =>
    ((await summary({ sheet_id: sheet, group_by: 'campaign', interval: 'day', tz })).data?.data ?? []).map((row) => [row.day, row.conversions, row.revenue])
  t.same(await days(), [['2026-02-28', 1, '2.00'], ['2026-03-01', 2, '11.75']], 'UTC by default')
  t.same(await days('America/New_York'), [['2026-02-28', 2, '12.50'], ['2026-03-01', 1, '1.25']])
  t.same(await days('Asia/Tokyo'), [['2026-03-01', 3, '13.75']])
  const bad = await summary({ sheet_id: sheet, group_by: 'campaign', interval: 'day', tz: 'Mars/Olympus' })
  t.same([bad.response.status, bad.error?.error, bad.error?.parameter], [400, 'invalid_parameter', 'tz'])
  const noGroup = await rawGet(`/summary?sheet_id=${sheet}`)
  t.same([noGroup.status, noGroup.body.error, noGroup.body.parameter], [400, 'missing_parameter', 'group_by'])
})

t.test('out-of-range ids, times and cursors, NUL characters and zone abbreviations get 4xx, never 5xx', async (t) => {
  const cursor = (text: string) => Buffer.from(text).toString('base64url')
  const cases: Array<[string, number, string]> = [
    ['/conversions/9999999999999999999', 404, 'id'],
    [`/conversions?cursor=${cursor('desc|2024-01-01T00:00:00Z|9999999999999999999')}`, 400, 'cursor'],
    [`/conversions?cursor=${cursor('desc|-100000-01-01T00:00:00Z|1')}`, 400, 'cursor'],
    ['/conversions?from=0000-01-01', 400, 'from'],
    ['/conversions?from=2024-02-30', 400, 'from'],
    ['/conversions?to=2024-02-30T10:00:00Z', 400, 'to'],
    ['/conversions?from=2023-02-29', 400, 'from'],
    ['/conversions?from=1900-02-29T00:00:00Z', 400, 'from'],
    ['/conversions?from=2026-04-31', 400, 'from'],
    ['/conversions?from=2026-13-01', 400, 'from'],
    ['/conversions?campaign_id=%00', 400, 'campaign_id'],
    ['/conversions?transaction_id=a%00b', 400, 'transaction_id'],
    ['/sheets/a%00b/status', 400, 'sheet_id'],
    ['/summary?group_by=campaign&tz=PST', 400, 'tz'],
    ['/summary?group_by=campaign&tz=US%2FPacific-New', 400, 'tz'],
  ]
  for (const [path, status, parameter] of cases) {
    const response = await rawGet(path)
    t.same([response.status, response.body.parameter], [status, parameter], `${path}: ${response.body.message}`)
  }
  // Leap days that exist, and month ends.
  for (const path of ['/conversions?from=2024-02-29', '/conversions?from=2000-02-29T12:00:00Z', '/conversions?to=2026-12-31', '/conversions?to=2026-04-30T23:59:59Z']) {
    t.equal((await rawGet(path)).status, 200, path)
  }
  const nulBody = await fetch(`${baseUrl}/api/v1/postback/admin/sheets`, {
    method: 'POST',
    headers: { ...admin, 'content-type': 'application/json' },
    body: JSON.stringify({ sheet_id: 'ok', name: 'x\u0000' }),
  })
  t.same([nulBody.status, ((await nulBody.json()) as { parameter: string }).parameter], [400, 'name'])
})
