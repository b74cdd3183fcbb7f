// The conversion lifecycle on a real store: statuses and network words, the allowed and refused
// moves, events as keys of their own, history, the summary's split, and concurrent moves of one key.
import { readFileSync } from 'node:fs'
import pg from 'pg'
import t, { type Test } from 'tap'
import { buildApp } from '../../src/app.ts'
import { isAllowedMove, STATUS_WORDS, STATUSES, type ConversionStatus } from '../../src/lifecycle.ts'
import { awaitLockWaiter, newKeyHeader, newSheet, onPostgres, receiverUrl, testApp, testConfig } from '../helpers.ts'

const app = await testApp(t)
const admin = await newKeyHeader(app, { global: true })

async function deliver(params: Record<string, string>, instance = app) {
  const response = await instance.inject({ method: 'GET', url: receiverUrl(params) })
  return { status: response.statusCode, body: response.json() }
}

async function api(path: string) {
  const response = await app.inject({ method: 'GET', url: `/api/v1/postback${path}`, headers: admin })
  if (response.statusCode !== 200) throw new Error(`${path}: ${response.statusCode} ${response.body}`)
  return response.json()
}

const history = async (id: string) => (await api(`/conversions/${id}/history`)).data as Array<Record<string, unknown>>

t.test('each allowed move updates the conversion; every other move and every repeat changes nothing', async (t) => {
  const sheet = await newSheet(app)
  // [stored status, delivered status, answer, status after]
  const cases: Array<[ConversionStatus, string, 'updated' | 'duplicate', ConversionStatus]> = [
    ['pending', 'approved', 'updated', 'approved'],
    ['pending', 'rejected', 'updated', 'rejected'],
    ['approved', 'rejected', 'updated', 'rejected'],
    ['approved', 'pending', 'duplicate', 'approved'],
    ['rejected', 'approved', 'duplicate', 'rejected'],
    ['rejected', 'pending', 'duplicate', 'rejected'],
    ['pending', 'pending', 'duplicate', 'pending'],
    ['approved', 'approved', 'duplicate', 'approved'],
    ['rejected', 'rejected', 'duplicate', 'rejected'],
  ]
  for (const [from, to, answer, after] of cases) {
    const tx = `${from}-${to}`
    const first = await deliver({ sheet_id: sheet, transaction_id: tx, status: from, payout: '10.00' })
    t.same(first, { status: 200, body: { status: 'stored', conversion_id: first.body.conversion_id, conversion_status: from } }, `${from} stored`)
    const second = await deliver({ sheet_id: sheet, transaction_id: tx, status: to, payout: '12.34', currency: 'EUR' })
    t.same(second, { status: 200, body: { status: answer, conversion_id: first.body.conversion_id, conversion_status: after } }, `${from} then ${to}: ${answer}`)
    const conversion = await api(`/conversions/${first.body.conversion_id}`)
    t.equal(conversion.status, after)
    t.equal(conversion.payout, answer === 'updated' ? '12.34' : '10.00', 'payout replaced only by a move')
    t.equal(conversion.currency, answer === 'updated' ? 'EUR' : 'USD', 'currency replaced only by a move')
    t.equal(conversion.updated_at === null, answer === 'duplicate', 'updated_at set by a move')
    t.equal(conversion.network_status, answer === 'updated' ? to : from)
    t.equal(isAllowedMove(from, to as ConversionStatus), answer === 'updated', 'the rule of src/lifecycle.ts agrees')
  }
})

t.test('a move keeps payout and currency when the delivery does not carry them', async (t) => {
  const sheet = await newSheet(app)
  const first = await deliver({ sheet_id: sheet, transaction_id: 'keep', status: 'lead', payout: '7.5', currency: 'gbp' })
  const moved = await deliver({ sheet_id: sheet, transaction_id: 'keep', status: 'sale' })
  t.equal(moved.body.status, 'updated')
  const conversion = await api(`/conversions/${first.body.conversion_id}`)
  t.same([conversion.status, conversion.network_status, conversion.payout, conversion.currency], ['approved', 'sale', '7.5', 'GBP'])
})

t.test('network words map case-insensitively; an absent status is approved', async (t) => {
  const sheet = await newSheet(app)
  const words: Array<[string | undefined, ConversionStatus]> = [
    [undefined, 'approved'],
    ['Sale', 'approved'],
    ['CONFIRMED', 'approved'],
    ['paid', 'approved'],
    ['approve', 'approved'],
    ['lead', 'pending'],
    ['On_Hold', 'pending'],
    ['hold', 'pending'],
    ['declined', 'rejected'],
    ['chargeback', 'rejected'],
    ['Cancelled', 'rejected'],
    ['canceled', 'rejected'],
    ['reversed', 'rejected'],
    ['refunded', 'rejected'],
    ['fraud', 'rejected'],
    ['Denied', 'rejected'],
    ['invalid', 'rejected'],
    ['accepted', 'approved'],
  ]
  for (const [index, [word, status]] of words.entries()) {
    const { body } = await deliver({ sheet_id: sheet, transaction_id: `w${index}`, ...(word ? { status: word } : {}) })
    t.equal(body.conversion_status, status, `${word ?? '(none)'} is ${status}`)
    t.equal((await api(`/conversions/${body.conversion_id}`)).network_status, word ?? null, 'the word is kept as sent')
  }
})

t.test("the README's table of status words is the code's", async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  for (const status of STATUSES) {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${status}\` |`))
    t.ok(row, `a row for ${status}`)
    const words = [...(row ?? '').split('|')[2]!.matchAll(/`([^`]+)`/g)].map((match) => match[1])
    t.same(words, STATUS_WORDS[status], `${status}: the same words`)
  }
})

t.test("a URL's own mapping parameters map its network's words, before the built-in ones", async (t) => {
  const sheet = await newSheet(app)
  const mapping = { approved_status: '1,ok', pending_status: '2', rejected_status: '3, sale' }
  const lead = await deliver({ sheet_id: sheet, transaction_id: 'm', status: '2', ...mapping })
  t.same(lead.body, { status: 'stored', conversion_id: lead.body.conversion_id, conversion_status: 'pending' })
  const sale = await deliver({ sheet_id: sheet, transaction_id: 'm', status: 'OK', ...mapping })
  t.same(sale.body, { status: 'updated', conversion_id: lead.body.conversion_id, conversion_status: 'approved' })
  const chargeback = await deliver({ sheet_id: sheet, transaction_id: 'm', status: 'sale', ...mapping })
  t.same(chargeback.body, { status: 'updated', conversion_id: lead.body.conversion_id, conversion_status: 'rejected' }, 'the URL maps "sale" to rejected')
  const conflicting = await deliver({ sheet_id: sheet, transaction_id: 'n', status: '1', approved_status: '1', rejected_status: '1' })
  t.equal(conflicting.status, 400)
  t.match(conflicting.body, { error: 'invalid_parameter', parameter: 'rejected_status', message: /approved_status maps it to approved/ })
})

t.test('an unknown status word is refused, naming the accepted words and the mapping parameters', async (t) => {
  const sheet = await newSheet(app)
  const { status, body } = await deliver({ sheet_id: sheet, transaction_id: 'u', status: '5', approved_status: '1' })
  t.equal(status, 400)
  t.equal(body.error, 'invalid_parameter')
  t.equal(body.parameter, 'status')
  for (const text of ['"5"', 'chargeback', 'on_hold', 'sale', 'approved_status', 'pending_status', 'rejected_status', "this URL's own: approved: 1"]) {
    t.ok(body.message.includes(text), `message names ${text}`)
  }
  const macro = await deliver({ sheet_id: sheet, transaction_id: 'u', status: '{status}' })
  t.match(macro.body, { error: 'unreplaced_macro', parameter: 'status' })
  t.equal((await api(`/conversions?sheet_id=${sheet}`)).data.length, 0, 'nothing stored')
})

t.test('events are keys of their own; a delivery without event is the base conversion', async (t) => {
  const sheet = await newSheet(app)
  const base = await deliver({ sheet_id: sheet, transaction_id: 'click', payout: '1' })
  const lead = await deliver({ sheet_id: sheet, transaction_id: 'click', event: 'lead', payout: '2' })
  const purchase = await deliver({ sheet_id: sheet, transaction_id: 'click', event: 'purchase', payout: '3' })
  const again = await deliver({ sheet_id: sheet, transaction_id: 'click', event: 'purchase', payout: '3' })
  t.same([base.body.status, lead.body.status, purchase.body.status, again.body.status], ['stored', 'stored', 'stored', 'duplicate'])
  t.equal(new Set([base.body.conversion_id, lead.body.conversion_id, purchase.body.conversion_id]).size, 3)
  t.equal(again.body.conversion_id, purchase.body.conversion_id)
  const list = await api(`/conversions?sheet_id=${sheet}&order=asc`)
  t.same(list.data.map((c: { event: string | null }) => c.event), [null, 'lead', 'purchase'])
  t.same((await api(`/conversions?sheet_id=${sheet}&event=lead`)).data.map((c: { id: string }) => c.id), [lead.body.conversion_id])
  t.same((await api(`/conversions?sheet_id=${sheet}&event=`)).data.map((c: { id: string }) => c.id), [base.body.conversion_id], 'event= selects the base conversion')
  const bad = await deliver({ sheet_id: sheet, transaction_id: 'click', event: '{event}' })
  t.match(bad.body, { error: 'unreplaced_macro', parameter: 'event' })
  const long = await deliver({ sheet_id: sheet, transaction_id: 'click', event: 'e'.repeat(256) })
  t.match(long.body, { error: 'invalid_parameter', parameter: 'event' })
})

t.test('history holds the first state and every applied move, oldest first; repeats and refused moves are not in it', async (t) => {
  const sheet = await newSheet(app)
  const first = await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'lead', payout: '5', currency: 'EUR' })
  const id = first.body.conversion_id
  t.same((await history(id)).map((e) => [e.status, e.network_status, e.payout, e.currency]), [['pending', 'lead', '5', 'EUR']], 'a conversion never moved: its one entry')
  await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'lead', payout: '6' })
  await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'sale', payout: '50.10' })
  await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'lead' })
  await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'chargeback' })
  await deliver({ sheet_id: sheet, transaction_id: 'h', status: 'sale' })
  const entries = await history(id)
  t.same(entries.map((e) => [e.status, e.network_status, e.payout, e.currency]), [
    ['pending', 'lead', '5', 'EUR'],
    ['approved', 'sale', '50.10', 'EUR'],
    ['rejected', 'chargeback', '50.10', 'EUR'],
  ])
  const times = entries.map((e) => Date.parse(e.recorded_at as string))
  t.ok(times.every((time, i) => i === 0 || time >= times[i - 1]!), 'oldest first')
  const conversion = await api(`/conversions/${id}`)
  t.equal(entries.at(-1)!.status, conversion.status, 'the last entry is the conversion as it stands')
  t.equal(entries.at(-1)!.recorded_at, conversion.updated_at)
  const missing = await app.inject({ method: 'GET', url: '/api/v1/postback/conversions/999999999999/history', headers: admin })
  t.equal(missing.statusCode, 404)
  const other = await newSheet(app)
  const scoped = await newKeyHeader(app, { sheetIds: [other] })
  const hidden = await app.inject({ method: 'GET', url: `/api/v1/postback/conversions/${id}/history`, headers: scoped })
  t.equal(hidden.statusCode, 404, "another sheet's key does not see it")
})

t.test('the summary counts approved conversions and revenue, with pending and rejected beside them, per event too', async (t) => {
  const sheet = await newSheet(app)
  const send = (transaction_id: string, status: string, payout: string, extra: Record<string, string> = {}) =>
    deliver({ sheet_id: sheet, transaction_id, status, payout, campaign_id: 'c1', ...extra })
  await send('a', 'sale', '10.10')
  await send('b', 'sale', '0.20')
  await send('c', 'lead', '5.05')
  await send('d', 'lead', '1.01')
  await send('d', 'sale', '1.02') // moved to approved with its new payout
  await send('e', 'sale', '100')
  await send('e', 'chargeback', '100') // reversed
  await send('f', 'rejected', '3.33')
  await send('g', 'sale', '7', { currency: 'EUR' })
  await send('a', 'sale', '10.10', { event: 'purchase' })
  const rows = (await api(`/summary?sheet_id=${sheet}&group_by=campaign`)).data
  t.same(rows, [
    { campaign_id: 'c1', currency: 'EUR', conversions: 1, revenue: '7.00', pending_conversions: 0, pending_revenue: '0.00', rejected_conversions: 0, rejected_revenue: '0.00' },
    { campaign_id: 'c1', currency: 'USD', conversions: 4, revenue: '21.42', pending_conversions: 1, pending_revenue: '5.05', rejected_conversions: 2, rejected_revenue: '103.33' },
  ])
  const byEvent = (await api(`/summary?sheet_id=${sheet}&group_by=event&currency=USD`)).data
  t.same(byEvent.map((r: Record<string, unknown>) => [r.event, r.conversions, r.revenue]), [
    ['purchase', 1, '10.10'],
    [null, 3, '11.32'],
  ])
  const pendingOnly = (await api(`/conversions?sheet_id=${sheet}&status=pending`)).data
  t.same(pendingOnly.map((c: { transaction_id: string }) => c.transaction_id), ['c'])
  const status = await api(`/sheets/${sheet}/status`)
  await app.deliveryLog.flush()
  t.same((await api(`/sheets/${sheet}/status`)).last_24h, { ...status.last_24h, stored: 8, updated: 2, duplicate: 0, rejected: 0 })
})

/** Many deliveries of one key with mixed statuses, all in flight at once, on the given instances. */
async function race(t: Test, instances: Array<typeof app>, sheet: string, count: number) {
  const words = ['lead', 'sale', 'chargeback', 'pending', 'approved', 'rejected']
  const answers = await Promise.all(
    Array.from({ length: count }, (_, i) => deliver({ sheet_id: sheet, transaction_id: 'race', status: words[(i * 7) % words.length]!, payout: `${i}` }, instances[i % instances.length])),
  )
  t.ok(answers.every((a) => a.status === 200), 'every delivery answered 200')
  const ids = new Set(answers.map((a) => a.body.conversion_id))
  t.equal(ids.size, 1, 'every answer names one conversion')
  const outcomes = answers.map((a) => a.body.status as string)
  t.equal(outcomes.filter((o) => o === 'stored').length, 1, 'exactly one delivery stored it')
  const [id] = [...ids] as string[]
  const entries = await history(id!)
  const updated = outcomes.filter((o) => o === 'updated').length
  t.equal(entries.length, updated === 0 ? 1 : updated + 1, 'one history entry per applied move, after the first state')
  for (let i = 1; i < entries.length; i++) {
    t.ok(isAllowedMove(entries[i - 1]!.status as ConversionStatus, entries[i]!.status as ConversionStatus), `entry ${i} is an allowed move`)
  }
  const conversion = await api(`/conversions/${id}`)
  t.equal(conversion.status, entries.at(-1)!.status, 'the final status is the last history entry')
  t.equal(conversion.payout, entries.at(-1)!.payout)
  const rows = await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`
  t.equal(rows[0]?.n, 1, 'one row')
  return outcomes
}

t.test('concurrent deliveries of one key with mixed statuses apply one at a time', async (t) => {
  for (let round = 0; round < 3; round++) {
    const outcomes = await race(t, [app], await newSheet(app), 40)
    t.ok(outcomes.includes('updated'), `round ${round}: moves were applied (${outcomes.join(' ')})`)
  }
})

// Two instances on one PostgreSQL: statements of both in flight on one key at once.
if (onPostgres) {
  t.test('two instances: concurrent moves of one key, one row, a history of real moves only', async (t) => {
    const second = await buildApp(testConfig(t))
    t.teardown(() => second.close())
    await second.ready()
    for (let round = 0; round < 3; round++) await race(t, [app, second], await newSheet(app), 60)
  })

  t.test('a move held back by another transaction is applied after it commits, on the newest row', async (t) => {
    const sheet = await newSheet(app)
    const first = await deliver({ sheet_id: sheet, transaction_id: 'held', status: 'lead', payout: '1' })
    const other = new pg.Client({ connectionString: process.env.DATABASE_URL })
    await other.connect()
    t.teardown(() => other.end())
    // Another instance moves it to rejected and has not committed yet.
    await other.query('BEGIN')
    await other.query(`UPDATE conversions SET status = 'rejected', network_status = 'fraud', updated_at = now() WHERE id = $1`, [first.body.conversion_id])
    const sale = deliver({ sheet_id: sheet, transaction_id: 'held', status: 'sale', payout: '9' })
    t.ok(await awaitLockWaiter(other, 100), 'the move waited on the other transaction: the race happened')
    await other.query('COMMIT')
    // Its statement saw the conversion pending; under the row's lock it found it rejected: final.
    t.same((await sale).body, { status: 'duplicate', conversion_id: first.body.conversion_id, conversion_status: 'rejected' })
    t.same((await history(first.body.conversion_id)).map((e) => e.status), ['pending', 'rejected'])
  })
}
