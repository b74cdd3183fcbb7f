// The group-commit writer on a real store: batches, splitting around a bad row, draining on close,
// one statement per batch, and a repeat that races its first delivery.
import pg from 'pg'
import t from 'tap'
import { ConversionWriter } from '../src/conversion-writer.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { newSheet, onPostgres, receiverUrl, testApp } from './helpers.ts'

const app = await testApp(t)
const count = async (sheet: string) =>
  (await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`)[0]?.n

t.test('a row that fails on its data fails alone; the rest of its batch is stored', async (t) => {
  const sheet = await newSheet(app)
  const batches: number[] = []
  const writer = new ConversionWriter({ query: (statement) => app.db.query(statement), batchMax: 100, queueMax: 100, concurrency: 1, retryAfterSeconds: 3, onBatch: (size) => batches.push(size) })
  // 'not-a-number' cannot pass the receiver's validation; here it stands for any row the database refuses.
  const deliveries: Delivery[] = Array.from({ length: 9 }, (_, i) => ({ sheet_id: sheet, transaction_id: `t${i}`, payout: i === 4 ? 'not-a-number' : `${i}` }))
  const results = await Promise.allSettled(deliveries.map((delivery) => writer.write(delivery)))
  t.same(batches, [9], 'one batch')
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])
  t.match((results[4] as PromiseRejectedResult).reason, { code: 'storage_unavailable', statusCode: 503, retryAfter: 3 })
  t.equal(await count(sheet), 8)
})

t.test('closing the app answers and stores the deliveries in flight', async (t) => {
  const local = await testApp(t)
  const sheet = await newSheet(local)
  const pending = Array.from({ length: 40 }, (_, i) => local.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `c${i}` }) }))
  await new Promise((resolve) => setImmediate(resolve))
  const closing = local.close()
  const responses = await Promise.all(pending)
  await closing
  const statuses = responses.map((r) => r.statusCode)
  const stored = statuses.filter((s) => s === 200).length
  t.ok(statuses.every((s) => s === 200 || s === 503), `every request answered 200 or 503: ${[...new Set(statuses)]}`)
  t.ok(stored > 0, `${stored} stored before close`)
  // Reopen the same store and check that every acknowledged delivery is there.
  const reopened = await testApp(t, local.config.DATABASE_URL ? {} : { DATA_DIR: local.config.DATA_DIR })
  const [row] = await reopened.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`
  t.equal(row?.n, stored)
})

/** A writer on the test app's store that counts its statements and batch sizes. */
function countingWriter(options: { batchMax?: number; concurrency?: number } = {}) {
  const statements: string[] = []
  const batches: number[] = []
  const writer = new ConversionWriter({
    query: (statement) => {
      statements.push(statement.name)
      return app.db.query(statement)
    },
    batchMax: options.batchMax ?? 100,
    queueMax: 1000,
    concurrency: options.concurrency ?? 1,
    retryAfterSeconds: 3,
    onBatch: (size) => batches.push(size),
  })
  return { writer, statements, batches }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

t.test('one statement answers a batch of new rows, repeats of stored rows, repeats within the batch and unknown sheets', async (t) => {
  const sheet = await newSheet(app)
  const { writer, statements, batches } = countingWriter()
  const first = await writer.write({ sheet_id: sheet, transaction_id: 'old' })
  await writer.drain()
  statements.length = 0
  batches.length = 0
  const results = await Promise.allSettled([
    writer.write({ sheet_id: sheet, transaction_id: 'new' }),
    writer.write({ sheet_id: sheet, transaction_id: 'old' }),
    writer.write({ sheet_id: sheet, transaction_id: 'new' }),
    writer.write({ sheet_id: 'no-such-sheet', transaction_id: 'new' }),
  ])
  await writer.drain()
  t.same(batches, [4], 'one batch')
  t.same(statements, ['postback_conversion_batch_v1'], 'one statement')
  const [created, repeat, twin, unknown] = results
  t.match(created, { status: 'fulfilled', value: { status: 'stored' } })
  t.same(repeat, { status: 'fulfilled', value: { status: 'duplicate', conversionId: first.conversionId } })
  t.same(twin, { status: 'fulfilled', value: { status: 'duplicate', conversionId: (created as PromiseFulfilledResult<{ conversionId: string }>).value.conversionId } })
  t.match(unknown, { status: 'rejected', reason: { code: 'unknown_sheet', statusCode: 404 } })
  t.equal(await count(sheet), 2)
})

t.test('a repeat whose first delivery commits while the batch waits on it is a duplicate with that row’s id', { skip: !onPostgres && 'needs a second connection (PostgreSQL)' }, async (t) => {
  const sheet = await newSheet(app)
  const other = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await other.connect()
  t.teardown(() => other.end())
  // Another instance's batch, not yet committed: our INSERT must wait for it on the unique key.
  await other.query('BEGIN')
  const [row] = (await other.query(`INSERT INTO conversions (sheet_id, transaction_id, currency) VALUES ($1, 'raced', 'USD') RETURNING id::text`, [sheet])).rows
  const { writer, statements } = countingWriter()
  const result = writer.write({ sheet_id: sheet, transaction_id: 'raced' })
  // Let our statement start and block on the other transaction's row.
  for (let i = 0; i < 50; i++) {
    const waiting = await other.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
    )
    if (waiting.rows[0].n > 0) break
    await sleep(20)
  }
  await other.query('COMMIT')
  t.same(await result, { status: 'duplicate', conversionId: row.id })
  t.same(statements, ['postback_conversion_batch_v1', 'postback_conversion_committed_v1'], 'the committed row is read by a second statement')
  t.equal(await count(sheet), 1)
})
