// The conversion list (filters, keyset paging in both orders while deliveries arrive) and the summary.
import t from 'tap'
import { deliverAll, newKeyHeader, newSheet, testApp } from './helpers.ts'

const app = await testApp(t)
const admin = await newKeyHeader(app, { global: true })
const get = async (url: string) => {
  const response = await app.inject({ method: 'GET', url: `/api/v1/postback${url}`, headers: admin })
  return { status: response.statusCode, body: response.json() }
}

interface Item {
  id: string
  sheet_id: string
  transaction_id: string
  payout: string | null
  currency: string
  campaign_id: string | null
  adset_id: string | null
  ad_id: string | null
  received_at: string
}

async function pageThrough(query: string, onPage?: (page: number) => Promise<void>): Promise<Item[]> {
  const items: Item[] = []
  let cursor: string | null = null
  for (let page = 0; page < 1000; page++) {
    const { status, body } = await get(`/conversions?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    if (status !== 200) throw new Error(JSON.stringify(body))
    items.push(...body.data)
    cursor = body.next_cursor
    if (!cursor) return items
    await onPage?.(page)
  }
  throw new Error('paging did not end')
}

t.test('an item carries every field, ids and decimals as strings, times in UTC', async (t) => {
  const sheet = await newSheet(app)
  const [id] = await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'full', payout: '0.10', currency: 'gbp', campaign_id: '1', adset_id: '2', ad_id: '3' }])
  const { body } = await get(`/conversions?sheet_id=${sheet}`)
  t.equal(body.next_cursor, null)
  t.same(Object.keys(body.data[0]).sort(), ['ad_id', 'adset_id', 'campaign_id', 'currency', 'id', 'payout', 'received_at', 'sheet_id', 'transaction_id'])
  t.match(body.data[0], { id, sheet_id: sheet, transaction_id: 'full', payout: '0.10', currency: 'GBP', campaign_id: '1', adset_id: '2', ad_id: '3' })
  t.match(body.data[0].received_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  t.ok(Math.abs(Date.parse(body.data[0].received_at) - Date.now()) < 60_000)
  const one = await get(`/conversions/${id}`)
  t.same(one.body, body.data[0])
  const missing = await get('/conversions/999999999999')
  t.same([missing.status, missing.body.error], [404, 'not_found'])
  const bad = await get('/conversions/abc')
  t.same([bad.status, bad.body.error, bad.body.parameter], [400, 'invalid_parameter', 'id'])
})

t.test('paging with small pages, both orders, while new deliveries arrive: each row exactly once', async (t) => {
  const sheet = await newSheet(app)
  const initial = await deliverAll(app, Array.from({ length: 300 }, (_, i) => ({ sheet_id: sheet, transaction_id: `p${i}`, payout: `${i}` })))
  let extra = 0
  const arrive = async () => {
    await deliverAll(app, Array.from({ length: 3 }, () => ({ sheet_id: sheet, transaction_id: `late${extra++}` })))
  }
  for (const order of ['desc', 'asc'] as const) {
    const seen = await pageThrough(`sheet_id=${sheet}&limit=7&order=${order}`, arrive)
    const ids = seen.map((item) => item.id)
    t.equal(new Set(ids).size, ids.length, `${order}: no row twice`)
    for (const id of initial) t.ok(ids.includes(id), `${order}: row ${id} seen`)
    const times = seen.map((item) => `${item.received_at}|${item.id.padStart(20, '0')}`)
    const sorted = [...times].sort()
    t.same(times, order === 'asc' ? sorted : sorted.reverse(), `${order}: in order`)
  }
  t.ok(extra > 0, `${extra} deliveries arrived while paging`)
})

t.test('rows of one batch share received_at; paging by (received_at, id) still yields each once, in order', async (t) => {
  const sheet = await newSheet(app)
  const burst = await Promise.all(
    Array.from({ length: 40 }, (_, i) => app.inject({ method: 'GET', url: `/meta/postback/conversion?sheet_id=${sheet}&transaction_id=b${i}` })),
  )
  const ids = burst.map((response) => response.json().conversion_id as string)
  for (const order of ['desc', 'asc'] as const) {
    const seen = await pageThrough(`sheet_id=${sheet}&limit=3&order=${order}`)
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
  const txs = async (query: string) => (await get(`/conversions?${query}`)).body.data.map((item: Item) => item.transaction_id).sort()
  t.same(await txs(`sheet_id=${sheet}`), ['f1', 'f2', 'f3'])
  t.same(await txs(`sheet_id=${sheet}&campaign_id=c1`), ['f1', 'f2'])
  t.same(await txs(`sheet_id=${sheet}&adset_id=s2`), ['f2'])
  t.same(await txs(`sheet_id=${sheet}&ad_id=a3`), ['f3'])
  t.same(await txs(`sheet_id=${sheet}&currency=eur`), ['f1'])
  t.same(await txs(`sheet_id=${sheet}&transaction_id=f2`), ['f2'])
  t.same(await txs(`campaign_id=c1&transaction_id=f1`), ['f1', 'f1'], 'without sheet_id: every sheet the key sees')
  const all = (await get(`/conversions?sheet_id=${sheet}`)).body.data as Item[]
  const oldest = all.at(-1)!.received_at
  t.equal(all.at(-1)!.transaction_id, 'f1')
  t.same(await txs(`sheet_id=${sheet}&from=${encodeURIComponent(oldest)}`), ['f1', 'f2', 'f3'], 'from is inclusive')
  t.same(await txs(`sheet_id=${sheet}&to=${encodeURIComponent(oldest)}`), [], 'to is exclusive')
  const after = new Date(Date.parse(oldest) + 1).toISOString()
  t.notOk((await txs(`sheet_id=${sheet}&from=${encodeURIComponent(after)}`)).includes('f1'))
  t.same(await txs(`sheet_id=${sheet}&from=2000-01-01&to=2000-01-02`), [])
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
    const { status, body } = await get(`/conversions?${query}`)
    t.same([status, body.error, body.parameter], [400, 'invalid_parameter', parameter], query)
  }
  const sheet = await newSheet(app)
  await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'x' }, { sheet_id: sheet, transaction_id: 'y' }])
  const { body } = await get(`/conversions?sheet_id=${sheet}&limit=1&order=desc`)
  const reused = await get(`/conversions?sheet_id=${sheet}&limit=1&order=asc&cursor=${body.next_cursor}`)
  t.same([reused.status, reused.body.parameter], [400, 'cursor'], 'a cursor is bound to its order')
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
  const format = (value: bigint) => `${value / 1_000_000n}.${String(value % 1_000_000n).padStart(6, '0')}`
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
    const { status, body } = await get(`/summary?sheet_id=${sheet}&group_by=${groupBy}`)
    t.equal(status, 200)
    t.equal(body.data.length, expected.size, `${groupBy}: one row per group and currency`)
    for (const row of body.data) {
      const group = { campaign: [row.campaign_id], adset: [row.campaign_id, row.adset_id], ad: [row.campaign_id, row.adset_id, row.ad_id] }[groupBy]
      const want = expected.get(JSON.stringify([...group, row.currency]))
      t.ok(want, `${groupBy}: group ${JSON.stringify(group)} ${row.currency} expected`)
      t.equal(row.conversions, want?.conversions)
      t.equal(micros(row.revenue), want?.revenue, `${groupBy}: revenue ${row.revenue}`)
    }
  }
  const adRow = (await get(`/summary?sheet_id=${sheet}&group_by=ad`)).body.data[0]
  t.same(Object.keys(adRow).sort(), ['ad_id', 'adset_id', 'campaign_id', 'conversions', 'currency', 'revenue'], 'an ad row names its ad set and campaign')
  const noPayout = await newSheet(app)
  await deliverAll(app, [{ sheet_id: noPayout, transaction_id: 'n', campaign_id: 'c' }])
  t.same((await get(`/summary?sheet_id=${noPayout}&group_by=campaign`)).body.data, [{ campaign_id: 'c', currency: 'USD', conversions: 1, revenue: '0' }])
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
    (await get(`/summary?sheet_id=${sheet}&group_by=campaign&interval=day${tz ? `&tz=${encodeURIComponent(tz)}` : ''}`)).body.data.map(
      (row: { day: string; conversions: number; revenue: string }) => [row.day, row.conversions, row.revenue],
    )
  t.same(await days(), [['2026-02-28', 1, '2'], ['2026-03-01', 2, '11.75']], 'UTC by default')
  t.same(await days('America/New_York'), [['2026-02-28', 2, '12.50'], ['2026-03-01', 1, '1.25']])
  t.same(await days('Asia/Tokyo'), [['2026-03-01', 3, '13.75']])
  const bad = await get(`/summary?sheet_id=${sheet}&group_by=campaign&interval=day&tz=Mars/Olympus`)
  t.same([bad.status, bad.body.error, bad.body.parameter], [400, 'invalid_parameter', 'tz'])
  const noGroup = await get(`/summary?sheet_id=${sheet}`)
  t.same([noGroup.status, noGroup.body.error, noGroup.body.parameter], [400, 'missing_parameter', 'group_by'])
})
