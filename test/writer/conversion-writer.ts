// The group-commit writer on a real store: batches, splitting around a bad row, draining on close,
// one statement per batch, the longest wait, pipelining, and a repeat that races its first delivery.
import pg from 'pg'
import t from 'tap'
import { BATCH_STATEMENT, IN_CALL_KEYS, writeDeliveries } from '../../src/conversion-batch.ts'
import { ConversionWriter, type ConversionWriterOptions } from '../../src/conversion-writer.ts'
import type { Statement } from '../../src/database.ts'
import type { Delivery } from '../../src/schemas/receiver.ts'
import { awaitLockWaiter, newSheet, onPostgres, receiverUrl, testApp } from '../helpers.ts'

const app = await testApp(t)
const count = async (sheet: string) =>
  (await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`)[0]?.n

t.test('a row that fails on its data fails alone with a 400 naming the problem; the rest of its batch is stored', async (t) => {
  const sheet = await newSheet(app)
  const batches: number[] = []
  const writer = new ConversionWriter({ query: (statement) => app.db.query(statement), batchMax: 100, batchWaitMs: 0, queueMax: 100, concurrency: 1, parallelAfterMs: 10, retryAfterSeconds: 3, onBatch: (size) => batches.push(size) })
  // 'not-a-number' cannot pass the receiver's validation; here it stands for any row the database refuses.
  const deliveries: Delivery[] = Array.from({ length: 9 }, (_, i) => ({ sheet_id: sheet, transaction_id: `t${i}`, payout: i === 4 ? 'not-a-number' : `${i}` }))
  const results = await Promise.allSettled(deliveries.map((delivery) => writer.write(delivery)))
  t.same(batches, [9], 'one batch')
  t.same(results.map((r) => r.status), ['fulfilled', 'fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled', 'fulfilled'])
  // A retry would be refused again: a 4xx, so that the network stops retrying and shows why.
  t.match((results[4] as PromiseRejectedResult).reason, { code: 'invalid_parameter', statusCode: 400, message: /refused a value.*not-a-number/ })
  t.equal(await count(sheet), 8)
})

t.test('closing the app while deliveries read their sheet\'s settings: they are stored and answered 200, not failed by the closing store', async (t) => {
  // Each delivery waits for the read of its sheet's settings (secret, allow-list). (On PostgreSQL,
  // without the receiver's wait for those reads, they failed with 503 as the pool closed.)
  const local = await testApp(t)
  const sheet = await newSheet(local)
  const pending = Array.from({ length: 20 }, (_, i) => local.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `r${i}` }) }))
  await new Promise((resolve) => setImmediate(resolve))
  const closing = local.close()
  const responses = await Promise.all(pending)
  await closing
  // Every acknowledged delivery is in the reopened store.
  const reopened = await testApp(t, local.config.DATABASE_URL ? {} : { DATA_DIR: local.config.DATA_DIR })
  const [row] = await reopened.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`
  const rows = row?.n
  t.same([...new Set(responses.map((r) => r.statusCode))], [200], responses.find((r) => r.statusCode !== 200)?.body ?? 'all 200')
  t.equal(rows, 20)
})

/** A writer on the test app's store that counts its statements and batch sizes. */
function countingWriter(options: { batchMax?: number; batchWaitMs?: number; concurrency?: number } = {}) {
  const statements: string[] = []
  const batches: number[] = []
  const writer = new ConversionWriter({
    query: (statement) => {
      statements.push(statement.name ?? 'stored rows (unnamed)')
      return app.db.query(statement)
    },
    batchMax: options.batchMax ?? 100,
    batchWaitMs: options.batchWaitMs ?? 0,
    queueMax: 1000,
    concurrency: options.concurrency ?? 1,
    parallelAfterMs: 10,
    retryAfterSeconds: 3,
    onBatch: (size) => batches.push(size),
  })
  return { writer, statements, batches }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The deliveries of a batch statement: its first parameter's elements (an array, or its literal). */
function rowsOf(statement: Statement): number {
  const sheets = statement.values[0] as string | string[]
  return typeof sheets === 'string' ? (JSON.parse(`[${sheets.slice(1, -1)}]`) as unknown[]).length : sheets.length
}

/**
 * A new sheet with `storedId` already stored, and a writer whose batch statement runs while the read
 * after it (the unnamed statement, for keys it did not write) finds the store gone.
 */
async function lookupFailingWriter(storedId: string) {
  const sheet = await newSheet(app)
  const setup = writerThrough((statement) => app.db.query(statement))
  await setup.write({ sheet_id: sheet, transaction_id: storedId })
  await setup.drain()
  const writer = writerThrough(async (statement) => {
    if (statement.name === undefined) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })
    // Without its signature (and name) the batch statement runs as a plain statement, not the
    // function that also reads the repeats' rows: they are read by the separate lookup.
    return app.db.query({ text: statement.text, values: statement.values })
  })
  return { sheet, writer }
}

/** A writer on the test app's store whose statements go through `query` (to hold or fail them). */
function writerThrough(query: ConversionWriterOptions['query'], options: Partial<ConversionWriterOptions> = {}) {
  return new ConversionWriter({ query, batchMax: 100, batchWaitMs: 0, queueMax: 100, concurrency: 1, parallelAfterMs: 10, retryAfterSeconds: 3, ...options })
}

t.test('a batch of new rows and unknown sheets is one statement; a repeat of a stored row adds one lookup; a repeat within the batch shares its first answer', async (t) => {
  const sheet = await newSheet(app)
  const { writer, statements, batches } = countingWriter()
  const fresh = await Promise.all([
    writer.write({ sheet_id: sheet, transaction_id: 'old' }),
    writer.write({ sheet_id: sheet, transaction_id: 'other' }),
    writer.write({ sheet_id: 'no-such-sheet', transaction_id: 'old' }).catch((error) => error),
  ])
  await writer.drain()
  t.same(batches, [3], 'one batch')
  t.same(statements, [BATCH_STATEMENT.name], 'one statement, which reads no stored row')
  t.match(fresh, [{ status: 'stored' }, { status: 'stored' }, { code: 'unknown_sheet' }])
  const first = fresh[0] as { conversionId: string }

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
  t.same(statements, [BATCH_STATEMENT.name], 'the batch statement, whose call also reads the keys it did not write')
  const [created, repeat, twin, unknown] = results
  t.match(created, { status: 'fulfilled', value: { status: 'stored' } })
  t.same(repeat, { status: 'fulfilled', value: { status: 'duplicate', conversionId: first.conversionId, conversionStatus: 'approved' } })
  t.same(twin, { status: 'fulfilled', value: { status: 'duplicate', conversionId: (created as PromiseFulfilledResult<{ conversionId: string }>).value.conversionId, conversionStatus: 'approved' } })
  t.match(unknown, { status: 'rejected', reason: { code: 'unknown_sheet', statusCode: 404 } })
  t.equal(await count(sheet), 3)
})

t.test('repeats in several sheets are each answered with their own row, and the keys the batch stored as stored', async (t) => {
  // Keys of two sheets, ids and events whose other combinations are stored too: (a, t2, sale) and
  // (b, t1) by this batch, (a, t2) before it: each answer is of its own key.
  const [a, b] = [await newSheet(app), await newSheet(app)]
  const { writer, statements } = countingWriter()
  const first = await Promise.all([
    writer.write({ sheet_id: a, transaction_id: 't1' }),
    writer.write({ sheet_id: b, transaction_id: 't2', event: 'sale' }),
    writer.write({ sheet_id: a, transaction_id: 't2' }),
  ])
  statements.length = 0
  const [repeatA, repeatB, newA, newB] = await Promise.all([
    writer.write({ sheet_id: a, transaction_id: 't1' }),
    writer.write({ sheet_id: b, transaction_id: 't2', event: 'sale' }),
    writer.write({ sheet_id: a, transaction_id: 't2', event: 'sale' }),
    writer.write({ sheet_id: b, transaction_id: 't1' }),
  ])
  t.same(statements, [BATCH_STATEMENT.name], 'one batch, its call also reading the repeats')
  t.same(repeatA, { status: 'duplicate', conversionId: first[0].conversionId, conversionStatus: 'approved' })
  t.same(repeatB, { status: 'duplicate', conversionId: first[1].conversionId, conversionStatus: 'approved' })
  t.match(newA, { status: 'stored' })
  t.match(newB, { status: 'stored' })
  t.not(newA.conversionId, first[2].conversionId)
  t.not(newB.conversionId, first[0].conversionId)
})

t.test("the batch statement's call answers a repeat with its stored row and a new key only as stored; a large batch leaves its repeats to the lookup", async (t) => {
  const sheet = await newSheet(app)
  const { conversionId: storedId } = await writerThrough((statement) => app.db.query(statement)).write({ sheet_id: sheet, transaction_id: 'old' })
  // The rows of the batch statement's call, as writeDeliveries makes it (a separate lookup after it
  // is left out).
  const call = async (ids: string[]) => {
    let rows: Array<{ transaction_id: string; outcome: string; id: string }> = []
    await writeDeliveries(
      async <Row>(statement: Statement) => {
        const answer = await app.db.query<Row>(statement)
        if (statement.name === BATCH_STATEMENT.name) rows = answer as typeof rows
        return answer
      },
      ids.map((id) => ({ sheet_id: sheet, transaction_id: id })),
    )
    return rows
  }
  const rows = await call(['new', 'old'])
  t.same(
    rows.map(({ transaction_id, outcome }) => [transaction_id, outcome]).sort(),
    [
      ['new', 'stored'],
      ['old', 'duplicate'],
    ],
  )
  t.equal(rows.find((row) => row.transaction_id === 'old')?.id, storedId)
  const many = Array.from({ length: IN_CALL_KEYS }, (_, index) => `many-${index}`)
  t.same((await call([...many, 'old'])).filter((row) => row.outcome !== 'stored'), [], 'no row for the repeat of a batch of more keys')
})

t.test("the batch statement's call names the keys of unknown sheets itself: in a batch with no active sheet, and in one of more than IN_CALL_KEYS keys", async (t) => {
  const sheet = await newSheet(app)
  // The names of the statements writeDeliveries ran, and the rows of the batch statement's call.
  const call = async (deliveries: Delivery[]) => {
    const statements: string[] = []
    let rows: Array<{ transaction_id: string; outcome: string }> = []
    const outcomes = await writeDeliveries(async <Row>(statement: Statement) => {
      statements.push(statement.name ?? 'stored rows (unnamed)')
      const answer = await app.db.query<Row>(statement)
      if (statement.name === BATCH_STATEMENT.name) rows = answer as typeof rows
      return answer
    }, deliveries)
    return { statements, rows, outcomes: [...outcomes.values()] }
  }
  const none = await call([{ sheet_id: 'no-such-sheet', transaction_id: 'n1' }, { sheet_id: 'nor-this-one', transaction_id: 'n2' }])
  t.same(none.statements, [BATCH_STATEMENT.name], 'one statement')
  t.same(none.rows.map((row) => row.outcome), ['unknown_sheet', 'unknown_sheet'], 'both keys named unknown by the call')
  t.same(none.outcomes, [null, null])
  const many = Array.from({ length: IN_CALL_KEYS }, (_, index) => ({ sheet_id: sheet, transaction_id: `large-${index}` }))
  const large = await call([...many, { sheet_id: 'no-such-sheet', transaction_id: 'large-x' }])
  t.same(large.statements, [BATCH_STATEMENT.name], 'one statement for a batch of more keys too')
  t.same(
    large.rows.filter((row) => row.outcome !== 'stored').map((row) => [row.transaction_id, row.outcome]),
    [['large-x', 'unknown_sheet']],
    'its unknown key named by the call',
  )
  t.equal(large.outcomes.filter((outcome) => outcome === null).length, 1)
})

t.test('a batch waits up to RECEIVER_BATCH_WAIT_MS for deliveries to join it, and no longer once it is full', async (t) => {
  const sheet = await newSheet(app)
  const waiting = countingWriter({ batchWaitMs: 300 })
  const started = Date.now()
  const early = waiting.writer.write({ sheet_id: sheet, transaction_id: 'w1' })
  await sleep(50)
  const late = waiting.writer.write({ sheet_id: sheet, transaction_id: 'w2' })
  await Promise.all([early, late])
  t.same(waiting.batches, [2], 'a delivery that came 50 ms later joined the batch')
  t.ok(Date.now() - started >= 290, 'the batch waited for the oldest delivery’s 300 ms')

  const full = countingWriter({ batchMax: 3, batchWaitMs: 60_000 })
  const before = Date.now()
  await Promise.all(['f1', 'f2', 'f3'].map((transaction_id) => full.writer.write({ sheet_id: sheet, transaction_id })))
  t.same(full.batches, [3])
  t.ok(Date.now() - before < 10_000, 'a full batch is written at once')

  const immediate = countingWriter({ batchWaitMs: 0 })
  await immediate.writer.write({ sheet_id: sheet, transaction_id: 'i1' })
  await immediate.writer.write({ sheet_id: sheet, transaction_id: 'i2' })
  t.same(immediate.batches, [1, 1], 'without a wait, each delivery that finds the writer idle is written at once')
})

t.test('one statement at a time while it is quick: another starts beside it after parallelAfterMs, or at once for a full batch', async (t) => {
  const sheet = await newSheet(app)
  // Statements are held until released, to make "quick" and "stalled" happen on demand.
  const started: Array<{ at: number; size: number; release: () => void }> = []
  const writer = new ConversionWriter({
    query: async (statement) => {
      if (statement.name) await new Promise<void>((resolve) => started.push({ at: Date.now(), size: rowsOf(statement), release: resolve }))
      return app.db.query(statement)
    },
    batchMax: 4,
    batchWaitMs: 0,
    queueMax: 1000,
    concurrency: 3,
    parallelAfterMs: 300,
    retryAfterSeconds: 3,
  })
  const begin = Date.now()
  const writes = [writer.write({ sheet_id: sheet, transaction_id: 'q0' })]
  await sleep(20)
  writes.push(...['q1', 'q2'].map((transaction_id) => writer.write({ sheet_id: sheet, transaction_id })))
  await sleep(100)
  t.same(started.map((s) => s.size), [1], 'while the first statement is young, the deliveries after it wait')
  await sleep(400)
  t.same(started.map((s) => s.size), [1, 2], 'once it has run parallelAfterMs, the next starts beside it')
  t.ok(started[1]!.at - begin >= 290, `not before (${started[1]!.at - begin} ms)`)

  writes.push(...['q3', 'q4', 'q5', 'q6'].map((transaction_id) => writer.write({ sheet_id: sheet, transaction_id })))
  await sleep(50)
  t.same(started.map((s) => s.size), [1, 2, 4], 'a full batch starts at once, up to concurrency')
  writes.push(writer.write({ sheet_id: sheet, transaction_id: 'q7' }))
  await sleep(400)
  t.equal(started.length, 3, 'no more than concurrency statements in flight')
  for (const statement of started.splice(0)) statement.release()
  await sleep(50)
  t.same(started.map((s) => s.size), [1], 'the delivery that waited goes when a connection frees')
  started[0]!.release()
  const results = await Promise.all(writes)
  t.same(results.map((r) => r.status), Array(8).fill('stored'))
  t.equal(await count(sheet), 8)
})

t.test('deliveries that arrive during a write go into the next statement, sent before the first batch is answered', async (t) => {
  const sheet = await newSheet(app)
  const events: string[] = []
  // The first statement is held until the test has queued more deliveries behind it.
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  const writer = new ConversionWriter({
    query: async (statement) => {
      events.push('statement')
      if (events.length === 1) await held
      return app.db.query(statement)
    },
    batchMax: 100,
    batchWaitMs: 0,
    queueMax: 1000,
    concurrency: 1,
    parallelAfterMs: 10,
    retryAfterSeconds: 3,
    onBatch: (size) => events.push(`batch of ${size} committed`),
  })
  const first = writer.write({ sheet_id: sheet, transaction_id: 'p0' }).then((result) => {
    events.push('first answered')
    return result
  })
  await new Promise((resolve) => setImmediate(resolve))
  // The first batch is in flight; these queue behind it and go together.
  const rest = Array.from({ length: 20 }, (_, i) => writer.write({ sheet_id: sheet, transaction_id: `p${i + 1}` }))
  release()
  const results = await Promise.all([first, ...rest])
  // The connection goes back to work before the first batch's answers are sent.
  t.same(events, ['statement', 'statement', 'batch of 1 committed', 'first answered', 'batch of 20 committed'])
  t.equal(new Set(results.map((r) => r.conversionId)).size, 21)
  t.ok(results.every((r) => r.status === 'stored'))
})

// Needs a second connection: PostgreSQL only, run in the suite's PostgreSQL pass.
if (onPostgres) {
  t.test('a repeat whose first delivery commits while the batch waits on it is a duplicate with that row’s id', async (t) => {
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
    t.ok(await awaitLockWaiter(other), 'our statement waited on the other transaction: the race happened')
    await other.query('COMMIT')
    t.same(await result, { status: 'duplicate', conversionId: row.id, conversionStatus: 'approved' })
    t.same(statements, [BATCH_STATEMENT.name], 'the committed row is read by the same call, in a snapshot taken after the wait')
    t.equal(await count(sheet), 1)
  })

  t.test('a sheet enabled again while the batch waits: its key stays answered unknown, not by the stored row the call reads after', async (t) => {
    const [disabled, busy] = [await newSheet(app), await newSheet(app)]
    const seed = writerThrough((statement) => app.db.query(statement))
    await Promise.all([seed.write({ sheet_id: disabled, transaction_id: 'k' }), seed.write({ sheet_id: busy, transaction_id: 'r' })])
    await app.prisma.$executeRaw`UPDATE sheets SET active = false WHERE sheet_id = ${disabled}`
    const other = new pg.Client({ connectionString: process.env.DATABASE_URL })
    await other.connect()
    t.teardown(() => other.end())
    // Another transaction holds the repeat's row and enables the sheet again; it commits while our
    // batch statement (which saw the sheet disabled) waits on that row.
    await other.query('BEGIN')
    await other.query(`UPDATE conversions SET network_status = 'held' WHERE sheet_id = $1 AND transaction_id = 'r'`, [busy])
    await other.query('UPDATE sheets SET active = true WHERE sheet_id = $1', [disabled])
    const { writer, statements } = countingWriter()
    const results = Promise.allSettled([writer.write({ sheet_id: disabled, transaction_id: 'k' }), writer.write({ sheet_id: busy, transaction_id: 'r' })])
    t.ok(await awaitLockWaiter(other), 'our statement waited on the other transaction: the race happened')
    await other.query('COMMIT')
    const [unknown, repeat] = await results
    t.match(unknown, { status: 'rejected', reason: { code: 'unknown_sheet', statusCode: 404 } })
    t.match(repeat, { status: 'fulfilled', value: { status: 'duplicate' } })
    t.same(statements, [BATCH_STATEMENT.name], 'one call, which read the repeat (and the now enabled sheet\'s row)')
  })
}

t.test('an observer that throws cannot keep a request unanswered', async (t) => {
  const sheet = await newSheet(app)
  let fail = false
  const writer = writerThrough(
    async (statement) => {
      // A connection that is gone: not a data error, so the whole batch is refused with 503.
      if (fail) throw Object.assign(new Error('connection refused'), { code: 'ECONNREFUSED' })
      return app.db.query(statement)
    },
    {
      onBatch: () => {
        throw new Error('observer failed')
      },
    },
  )
  const stored = await writer.write({ sheet_id: sheet, transaction_id: 'o1' })
  t.equal(stored.status, 'stored', 'a committed batch is answered before its observer runs')
  fail = true
  const refused = await Promise.race([
    writer.write({ sheet_id: sheet, transaction_id: 'o2' }).then(() => 'resolved', (error: { code?: string }) => error.code),
    sleep(5000).then(() => 'unanswered after 5 s'),
  ])
  t.equal(refused, 'storage_unavailable', 'a failed batch is answered before its observer runs')
  const drained = await Promise.race([writer.drain().then(() => 'drained'), sleep(5000).then(() => 'drain hangs')])
  t.equal(drained, 'drained')
})

t.test('after a data error splits a batch, a failure that is not about data ends the batch at once', async (t) => {
  const sheet = await newSheet(app)
  const statements: number[] = []
  const writer = writerThrough(async (statement) => {
    statements.push(rowsOf(statement))
    // The first half's statement finds the store gone.
    if (statements.length === 2) throw Object.assign(new Error('connection reset'), { code: 'ECONNRESET' })
    return app.db.query(statement)
  })
  const deliveries = Array.from({ length: 8 }, (_, i) => ({ sheet_id: sheet, transaction_id: `s${i}`, payout: i === 6 ? 'not-a-number' : '1' }))
  const results = await Promise.allSettled(deliveries.map((delivery) => writer.write(delivery)))
  t.same(statements, [8, 4], 'the whole batch, then its first half; the second half is not tried')
  t.ok(results.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'storage_unavailable'), 'every request gets the 503')
  t.equal(await count(sheet), 0)
})

t.test('when the read of the keys a batch did not write fails, the keys it wrote are answered as stored; only the others get the 503', async (t) => {
  const { sheet, writer } = await lookupFailingWriter('kept')
  const [created, repeat] = await Promise.allSettled([
    writer.write({ sheet_id: sheet, transaction_id: 'new' }),
    writer.write({ sheet_id: sheet, transaction_id: 'kept' }),
  ])
  t.match(created, { status: 'fulfilled', value: { status: 'stored', conversionStatus: 'approved' } }, 'committed, and answered so')
  t.match(repeat, { status: 'rejected', reason: { code: 'storage_unavailable', statusCode: 503 } }, 'its answer could not be read: retried later, then a duplicate')
  t.equal(await count(sheet), 2)
})

t.test('submit answers each delivery once: those a committed statement answered keep their answer when the read after it fails', async (t) => {
  const { sheet, writer } = await lookupFailingWriter('kept-once')
  const answers = new Map<string, Array<string | undefined>>()
  for (const id of ['new-once', 'kept-once']) {
    answers.set(id, [])
    writer.submit({ sheet_id: sheet, transaction_id: id }, (error, result) => answers.get(id)!.push(error ? (error as { code?: string }).code : result!.status))
  }
  await writer.drain()
  await sleep(20)
  t.same(Object.fromEntries(answers), { 'new-once': ['stored'], 'kept-once': ['storage_unavailable'] })
})

t.test("an answer that throws keeps none of its batch's others from theirs", async (t) => {
  const sheet = await newSheet(app)
  const thrown: unknown[] = []
  const writer = writerThrough((statement) => app.db.query(statement), { onAnswerError: (error) => thrown.push(error) })
  const answered: string[] = []
  for (const id of ['a1', 'a2', 'a3']) {
    writer.submit({ sheet_id: sheet, transaction_id: id }, (error, result) => {
      answered.push(`${id}:${error ? 'error' : result!.status}`)
      if (id === 'a1') throw new Error('answer failed')
    })
  }
  await writer.drain()
  t.same(answered, ['a1:stored', 'a2:stored', 'a3:stored'])
  t.match(thrown, [{ message: 'answer failed' }])
})

t.test('a statement that fails without a reason (a rejection with undefined) still answers its batch, with the 503', async (t) => {
  const sheet = await newSheet(app)
  // eslint-disable-next-line prefer-promise-reject-errors -- exactly what is tested
  const writer = writerThrough(() => Promise.reject(undefined))
  const answers = await Promise.race([
    Promise.allSettled([writer.write({ sheet_id: sheet, transaction_id: 'u1' }), writer.write({ sheet_id: sheet, transaction_id: 'u2' })]),
    sleep(5000).then(() => 'unanswered after 5 s'),
  ])
  t.match(answers, [
    { status: 'rejected', reason: { code: 'storage_unavailable' } },
    { status: 'rejected', reason: { code: 'storage_unavailable' } },
  ])
})

t.test('submit answers at once, with the 503, when the queue is full', async (t) => {
  const sheet = await newSheet(app)
  const writer = writerThrough((statement) => app.db.query(statement), { queueMax: 1 })
  const answers: string[] = []
  writer.submit({ sheet_id: sheet, transaction_id: 'q1' }, (error, result) => answers.push(error ? 'error' : result!.status))
  writer.submit({ sheet_id: sheet, transaction_id: 'q2' }, (error) => answers.push((error as { code?: string } | null)?.code ?? 'no error'))
  t.same(answers, ['overloaded'], 'the second, synchronously')
  await writer.drain()
  t.same(answers, ['overloaded', 'stored'])
})

t.test("the oldest queued delivery's wait counts from its arrival, not from when the batch before it left", async (t) => {
  const sheet = await newSheet(app)
  let release!: () => void
  const held = new Promise<void>((resolve) => (release = resolve))
  let calls = 0
  const writer = writerThrough(
    async (statement) => {
      if (calls++ === 0) await held
      return app.db.query(statement)
    },
    { batchMax: 2, batchWaitMs: 1000 },
  )
  // A full batch goes at once and is held; five more queue behind it, all arriving now.
  const first = Promise.all([writer.write({ sheet_id: sheet, transaction_id: 'q0' }), writer.write({ sheet_id: sheet, transaction_id: 'q1' })])
  await sleep(10)
  const arrived = Date.now()
  const queued = ['q2', 'q3', 'q4', 'q5', 'q6'].map((transaction_id) => writer.write({ sheet_id: sheet, transaction_id }))
  await sleep(1500)
  release()
  await first
  await Promise.all(queued)
  // q6 is alone in the last batch. Its 1 s wait was over while the first batch was held (1.5 s), so it
  // goes as soon as the connection is free; were the wait restarted when q2..q5 left, about 2.5 s.
  const waited = Date.now() - arrived
  t.ok(waited < 2200, `the last delivery was written ${waited} ms after it arrived (1500 ms held, wait 1000 ms from arrival)`)
})
