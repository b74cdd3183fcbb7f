// The change feed (GET /api/v1/postback/changes) on either store: order, what each change carries,
// resuming, long polls, scope; on PostgreSQL, a change held back by a transaction that commits late.
import pg from 'pg'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { awaitHorizon, deliverAll, newKeyHeader, newPostgresDatabase, newSheet, onPostgres, testApp } from '../helpers.ts'

interface Change {
  position: string
  kind: 'stored' | 'updated'
  conversion: { id: string; sheet_id: string; transaction_id: string; status: string; network_status: string | null; payout: string | null; currency: string; event: string | null; updated_at: string | null }
}
interface Page {
  data: Change[]
  next: string
}

async function changes(app: FastifyInstance, headers: { authorization: string }, query: Record<string, string> = {}): Promise<Page> {
  const response = await app.inject({ url: `/api/v1/postback/changes?${new URLSearchParams(query)}`, headers })
  if (response.statusCode !== 200) throw new Error(`changes: ${response.statusCode} ${response.body}`)
  return response.json<Page>()
}

/** Every change from `after` on, page by page, and the last `next`. */
async function follow(app: FastifyInstance, headers: { authorization: string }, query: Record<string, string> = {}) {
  await awaitHorizon(app.prisma)
  const all: Change[] = []
  let after = query.after
  for (;;) {
    const page = await changes(app, headers, { ...query, ...(after === undefined ? {} : { after }) })
    all.push(...page.data)
    after = page.next
    if (page.data.length === 0) return { changes: all, next: after }
  }
}

const summary = (change: Change) => `${change.kind} ${change.conversion.transaction_id} ${change.conversion.status} ${change.conversion.payout}`

t.test('stored and updated changes in order, each with the conversion as it left it, resumed from next', async (t) => {
  const app = await testApp(t)
  const sheet = await newSheet(app)
  const key = await newKeyHeader(app, { sheetIds: [sheet] })

  const empty = await changes(app, key)
  t.same(empty.data, [], 'nothing stored yet')
  t.type(empty.next, 'string', 'an empty page has a next position too')

  await deliverAll(app, [
    { sheet_id: sheet, transaction_id: 'a', status: 'lead', payout: '1.00' },
    { sheet_id: sheet, transaction_id: 'b', payout: '2.00' },
    { sheet_id: sheet, transaction_id: 'a', status: 'sale', payout: '5.00' },
    { sheet_id: sheet, transaction_id: 'a', status: 'sale', payout: '9.99' }, // a repeat: no change
    { sheet_id: sheet, transaction_id: 'b', status: 'chargeback' },
    { sheet_id: sheet, transaction_id: 'c', event: 'deposit', payout: '3', currency: 'EUR' },
  ])
  const first = await follow(app, key, { after: empty.next, limit: '2' })
  t.same(first.changes.map(summary), [
    'stored a pending 1.00',
    'stored b approved 2.00',
    'updated a approved 5.00',
    'updated b rejected 2.00',
    'stored c approved 3',
  ])
  t.same(new Set(first.changes.map((c) => c.position)).size, 5, 'every change has a position of its own')
  const [storedA, , updatedA] = first.changes
  t.equal(storedA!.conversion.network_status, 'lead')
  t.equal(storedA!.conversion.updated_at, null, 'a stored change shows the conversion as it was stored, not as it is now')
  t.equal(updatedA!.conversion.network_status, 'sale')
  t.type(updatedA!.conversion.updated_at, 'string')
  t.equal(storedA!.conversion.id, updatedA!.conversion.id)
  t.same(first.changes[4]!.conversion, { ...first.changes[4]!.conversion, event: 'deposit', currency: 'EUR' })

  const again = await follow(app, key)
  t.same(again.changes.map((c) => c.position), first.changes.map((c) => c.position), 'from the beginning: the same changes in the same order')

  const quiet = await changes(app, key, { after: first.next })
  t.same(quiet.data, [], 'nothing after the last next')
  await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'c', event: 'deposit', status: 'rejected' }, { sheet_id: sheet, transaction_id: 'd' }])
  const resumed = await follow(app, key, { after: quiet.next })
  t.same(resumed.changes.map(summary), ['updated c rejected 3', 'stored d approved null'], 'resuming from next: only what is new')

  const middle = await follow(app, key, { after: first.changes[1]!.position })
  t.same(middle.changes.map(summary), [...first.changes.slice(2), ...resumed.changes].map(summary), 'resuming from a change position: what came after it')
})

t.test('a sheet-scoped key sees only its sheets', async (t) => {
  const app = await testApp(t)
  const [mine, other] = [await newSheet(app), await newSheet(app)]
  const key = await newKeyHeader(app, { sheetIds: [mine] })
  const both = await newKeyHeader(app, { sheetIds: [mine, other] })
  await deliverAll(app, [
    { sheet_id: other, transaction_id: 'x' },
    { sheet_id: mine, transaction_id: 'y' },
    { sheet_id: other, transaction_id: 'x', status: 'rejected' },
    { sheet_id: mine, transaction_id: 'z' },
  ])
  t.same((await follow(app, key)).changes.map(summary), ['stored y approved null', 'stored z approved null'])
  t.same((await follow(app, both)).changes.map(summary), ['stored x approved null', 'stored y approved null', 'updated x rejected null', 'stored z approved null'], 'two sheets merged in feed order')
  t.same((await follow(app, both, { sheet_id: other })).changes.map(summary), ['stored x approved null', 'updated x rejected null'], 'sheet_id narrows to one')
  const refused = await app.inject({ url: `/api/v1/postback/changes?sheet_id=${other}`, headers: key })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json().parameter, 'sheet_id')
})

t.test('a global key follows every sheet, also one created while it follows', async (t) => {
  // Its own database: on PostgreSQL the suite's is shared with other tests.
  const app = await testApp(t, onPostgres ? { DATABASE_URL: await newPostgresDatabase(t) } : {})
  const key = await newKeyHeader(app, { global: true })
  const first = await newSheet(app)
  await deliverAll(app, [{ sheet_id: first, transaction_id: 'one' }])
  const before = await follow(app, key)
  const second = await newSheet(app)
  await deliverAll(app, [{ sheet_id: second, transaction_id: 'two' }, { sheet_id: first, transaction_id: 'three' }])
  const after = await follow(app, key, { after: before.next })
  t.same([...before.changes, ...after.changes].map((change) => `${change.conversion.sheet_id} ${change.conversion.transaction_id}`), [`${first} one`, `${second} two`, `${first} three`])
})

t.test('bad positions and limits are refused, naming the parameter', async (t) => {
  const app = await testApp(t)
  const key = await newKeyHeader(app, { global: true })
  for (const after of ['abc', '1.2.3', '-1.0.0', '1.0', '99999999999999999999999.0.0', '1.0.9223372036854775808']) {
    const response = await app.inject({ url: `/api/v1/postback/changes?after=${after}`, headers: key })
    t.equal(response.statusCode, 400, after)
    t.equal(response.json().parameter, 'after', after)
  }
  for (const [name, value] of [['limit', '0'], ['limit', '1001'], ['wait', '31'], ['wait', '-1']]) {
    const response = await app.inject({ url: `/api/v1/postback/changes?${name}=${value}`, headers: key })
    t.equal(response.statusCode, 400, `${name}=${value}`)
    t.equal(response.json().parameter, name)
  }
})

t.test('a long poll answers when a change commits, or empty when the wait is up', async (t) => {
  const app = await testApp(t)
  const sheet = await newSheet(app)
  const key = await newKeyHeader(app, { sheetIds: [sheet] })
  const { next } = await changes(app, key)

  let started = performance.now()
  const waiting = changes(app, key, { after: next, wait: '20' })
  await new Promise((resolve) => setTimeout(resolve, 300))
  await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'late' }])
  const page = await waiting
  const elapsed = performance.now() - started
  t.same(page.data.map(summary), ['stored late approved null'])
  t.ok(elapsed >= 300 && elapsed < 10_000, `answered when the change committed (${Math.round(elapsed)} ms), not at the end of the wait`)

  started = performance.now()
  const timedOut = await changes(app, key, { after: page.next, wait: '1' })
  t.same(timedOut.data, [])
  t.ok(performance.now() - started >= 1000, 'an empty answer after the wait')
  t.type(timedOut.next, 'string')
  t.same((await changes(app, key, { after: timedOut.next })).data, [], 'its next is past every change')
})

t.test('closing the app ends long polls at once', async (t) => {
  const app = await testApp(t)
  const key = await newKeyHeader(app, { sheetIds: [await newSheet(app)] })
  const { next } = await changes(app, key)
  const waiting = changes(app, key, { after: next, wait: '30' })
  await new Promise((resolve) => setTimeout(resolve, 200))
  const started = performance.now()
  await app.close()
  t.same((await waiting).data, [])
  t.ok(performance.now() - started < 5000, 'the close did not wait out the long poll')
})

if (onPostgres) {
  t.test('a change held back by a transaction that commits late is delivered once, and nothing after it before', async (t) => {
    const app = await testApp(t)
    const sheet = await newSheet(app)
    const key = await newKeyHeader(app, { sheetIds: [sheet] })
    await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'before' }])
    const start = await follow(app, key)
    t.same(start.changes.map(summary), ['stored before approved null'])

    // A writer whose transaction takes its id now and commits after later deliveries have.
    const late = new pg.Client({ connectionString: process.env.DATABASE_URL })
    await late.connect()
    t.teardown(() => late.end())
    await late.query('BEGIN')
    await late.query(`INSERT INTO conversions (sheet_id, transaction_id, currency) VALUES ($1, 'held', 'USD')`, [sheet])
    await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'after-1' }, { sheet_id: sheet, transaction_id: 'after-1', status: 'rejected' }, { sheet_id: sheet, transaction_id: 'after-2' }])

    const held = await follow(app, key, { after: start.next })
    t.same(held.changes, [], 'committed changes that came after the open transaction wait for it')
    const polled = changes(app, key, { after: held.next, wait: '20' })
    await new Promise((resolve) => setTimeout(resolve, 500))
    await late.query('COMMIT')
    const page = await polled
    const rest = await follow(app, key, { after: page.next })
    t.same([...page.data, ...rest.changes].map(summary), ['stored held approved null', 'stored after-1 approved null', 'updated after-1 rejected null', 'stored after-2 approved null'], 'then all of them, once each, the late one first')
  })
}

if (onPostgres) {
  t.test("a move by a transaction older than the conversion's insert still comes after the insert", async (t) => {
    const app = await testApp(t)
    const sheet = await newSheet(app)
    const key = await newKeyHeader(app, { sheetIds: [sheet] })
    const [older, newer] = [new pg.Client({ connectionString: process.env.DATABASE_URL }), new pg.Client({ connectionString: process.env.DATABASE_URL })]
    for (const client of [older, newer]) {
      await client.connect()
      t.teardown(() => client.end())
    }
    // The older transaction takes its id first (writing another conversion), the newer one stores
    // the conversion and commits, then the older one moves it: a larger id did the insert.
    await older.query('BEGIN')
    await older.query(`INSERT INTO conversions (sheet_id, transaction_id, currency) VALUES ($1, 'first', 'USD')`, [sheet])
    await newer.query(`INSERT INTO conversions (sheet_id, transaction_id, currency, status) VALUES ($1, 'moved', 'USD', 'pending')`, [sheet])
    await older.query(`UPDATE conversions SET status = 'approved', updated_at = now() WHERE sheet_id = $1 AND transaction_id = 'moved'`, [sheet])
    await older.query('COMMIT')
    const { rows } = await older.query<{ stored: string; moved: string }>(
      `SELECT stored_key::text AS stored, (SELECT change_key::text FROM conversion_history h WHERE h.conversion_id = c.id AND h.change_key IS NOT NULL) AS moved
       FROM conversions c WHERE sheet_id = $1 AND transaction_id = 'moved'`,
      [sheet],
    )
    t.equal(rows[0]!.moved, rows[0]!.stored, 'the move took the key of the insert, the larger one')
    t.same((await follow(app, key)).changes.map(summary), ['stored first approved null', 'stored moved pending null', 'updated moved approved null'])
  })
}
