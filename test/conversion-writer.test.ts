// The group-commit writer on a real store: batches, splitting around a bad row, draining on close.
import t from 'tap'
import { ConversionWriter } from '../src/conversion-writer.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { newSheet, receiverUrl, testApp } from './helpers.ts'

const app = await testApp(t)
const count = async (sheet: string) =>
  (await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`)[0]?.n

t.test('a row that fails on its data fails alone; the rest of its batch is stored', async (t) => {
  const sheet = await newSheet(app)
  const batches: number[] = []
  const writer = new ConversionWriter({ prisma: app.prisma, batchMax: 100, queueMax: 100, concurrency: 1, retryAfterSeconds: 3, onBatch: (size) => batches.push(size) })
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
