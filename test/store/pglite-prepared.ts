// The receiver's batch statement on PGlite, called by a statement prepared in the session
// (src/pglite-prepared.ts): prepared once and again when the session lost it, never run inside a
// transaction that Prisma holds open, and its values and rows as PGlite's query writes and reads them.
import { PGlite } from '@electric-sql/pglite'
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { BATCH_STATEMENT, keyOf, writeDeliveries } from '../../src/conversion-batch.ts'
import { openDatabase } from '../../src/database.ts'
import { PreparedStatements } from '../../src/pglite-prepared.ts'
import type { Delivery } from '../../src/schemas/receiver.ts'
import { StoreUnavailableError } from '../../src/storage-errors.ts'
import { newSheet, onPostgres, pgliteCopy, receiverUrl, testApp } from '../helpers.ts'

if (!onPostgres) {
  t.test('the batch statement is prepared once in the session, and again after the session lost it', async (t) => {
    const app = await testApp(t)
    const sheet = await newSheet(app)
    const deliver = async (transaction: string) => (await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: transaction }) })).json()
    const prepared = async () =>
      app.db.withSession(async (session) => (await session.query<{ name: string }>('SELECT name FROM pg_prepared_statements ORDER BY name', [])).map((row) => row.name))
    t.match(await deliver('first'), { status: 'stored' })
    t.same(await prepared(), [BATCH_STATEMENT.name], 'the session holds the batch statement, prepared')
    await app.db.withSession((session) => session.exec('DEALLOCATE ALL'))
    t.same(await prepared(), [], 'gone from the session')
    t.match(await deliver('second'), { status: 'stored' }, 'a delivery after it was lost is stored')
    t.match(await deliver('first'), { status: 'duplicate' })
    t.same(await prepared(), [BATCH_STATEMENT.name], 'prepared again')
  })

  t.test('a batch waits for a transaction held open on the session and commits on its own: a rollback of the transaction keeps it', async (t) => {
    const app = await testApp(t)
    const sheet = await newSheet(app)
    // The session's function and statement made first (making the function waits for the transaction by itself).
    const first = { sheet_id: sheet, transaction_id: 'before-it' } as Delivery
    t.match((await writeDeliveries((statement) => app.db.query(statement), [first])).get(keyOf(first)), { status: 'stored' })
    let release!: () => void
    const released = new Promise<void>((resolve) => (release = resolve))
    let opened!: () => void
    const open = new Promise<void>((resolve) => (opened = resolve))
    const rolledBack = app.prisma
      .$transaction(async (tx) => {
        await tx.$executeRawUnsafe(`INSERT INTO conversions (sheet_id, transaction_id, currency) VALUES ($1, 'in-transaction', 'USD')`, sheet)
        opened()
        await released
        throw new Error('rolled back')
      })
      .then(
        () => 'committed',
        (error: Error) => error.message,
      )
    await open
    const delivery = { sheet_id: sheet, transaction_id: 'beside-it' } as Delivery
    let settled = false
    const written = writeDeliveries((statement) => app.db.query(statement), [delivery]).finally(() => (settled = true))
    // Long enough for the statement to have run, had it not waited for the transaction.
    await new Promise((resolve) => setTimeout(resolve, 300))
    t.equal(settled, false, 'the batch waits while the transaction is open')
    release()
    t.equal(await rolledBack, 'rolled back')
    const outcomes = await written
    t.match(outcomes.get(keyOf(delivery)), { status: 'stored' })
    const rows = await app.prisma.$queryRawUnsafe<Array<{ transaction_id: string }>>(
      'SELECT transaction_id FROM conversions WHERE sheet_id = $1 ORDER BY transaction_id',
      sheet,
    )
    t.same(
      rows.map((row) => row.transaction_id),
      ['before-it', 'beside-it'],
      "the batch's row is stored, the transaction's is not",
    )
  })

  t.test("values are written and rows read as PGlite's query writes and reads them", async (t) => {
    const pglite = new PGlite()
    t.teardown(() => pglite.close())
    const prepared = new PreparedStatements(pglite)
    const text = 'SELECT $1::text[] AS texts, $2::text AS text, $3::int AS number, $4::numeric AS amount, $5::bigint AS big, $6::boolean AS flag, $7::jsonb AS doc'
    const cases: unknown[][] = [
      [['a', 'b"c', 'd\\e', null, 'ünï ✓', '{x}', ''], 'plain', 7, '12.50', '9007199254740993', true, { a: [1, 'two'] }],
      [[], null, null, null, null, null, null],
      ['{"a","b\\\\c",NULL}', 'x\\y', '42', '-0.000001', 1, false, '"s"'],
    ]
    for (const values of cases) {
      const expected = (await pglite.query(text, values)).rows
      t.strictSame(await prepared.query('values_test', text, values), expected, JSON.stringify(values))
    }
    t.same(await prepared.query('no_rows', 'SELECT 1 WHERE false', []), [], 'a statement without rows')
    t.same(await prepared.query('no_result', 'SET search_path = public', []), [], 'a statement that returns none')
    await t.rejects(prepared.query('failing', 'SELECT 1 / $1::int AS x', [0]), { code: '22012' }, "an error is PostgreSQL's")
    t.same(await prepared.query('failing', 'SELECT 1 / $1::int AS x', [1]), [{ x: 1 }], 'the session goes on after it')
  })

  t.test('a statement issued while the store closes fails as the store being unavailable', async (t) => {
    const db = await openDatabase(loadConfig({ DATA_DIR: pgliteCopy(t) }))
    const statement = { name: 'closing_test', text: 'SELECT 1 AS x', values: [], signature: { parameters: [], returns: 'x int' } }
    t.same(await db.query(statement), [{ x: 1 }])
    const closing = db.close()
    const during = db.query(statement)
    await closing
    await t.rejects(during, StoreUnavailableError)
    await t.rejects(db.query(statement), StoreUnavailableError, 'and after it')
  })

  t.test('a statement of the same name left in the session (a prepare that failed half-way) is replaced', async (t) => {
    const pglite = new PGlite()
    t.teardown(() => pglite.close())
    await pglite.exec("PREPARE leftover AS SELECT 'old' AS x")
    const prepared = new PreparedStatements(pglite)
    t.strictSame(await prepared.query('leftover', 'SELECT $1::text AS x', ['new']), [{ x: 'new' }])
    await t.rejects(prepared.query('leftover', 'SELECT 2', []), /already another statement/, 'one name, one text')
  })
}
