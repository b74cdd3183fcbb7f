// The batch statement as a function of each connection's session (src/database.ts): on PostgreSQL
// made again when a session loses it, its read of repeats planned on the key's index whatever the
// statistics, and a role that may not create temporary objects runs the statements as they are.
import pg from 'pg'
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { BATCH_STATEMENT, keyOf, writeDeliveries } from '../../src/conversion-batch.ts'
import { openDatabase } from '../../src/database.ts'
import type { Delivery } from '../../src/schemas/receiver.ts'
import { newPostgresDatabase, newSheet, onPostgres, receiverUrl, testApp, uniqueId } from '../helpers.ts'

if (onPostgres) {
  t.test('a session that lost its function (dropped from outside) makes it again: no delivery fails', async (t) => {
    const app = await testApp(t)
    const sheet = await newSheet(app)
    const deliver = async (transaction: string) => (await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: transaction }) })).json()
    t.match(await deliver('before'), { status: 'stored' })
    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL })
    await admin.connect()
    t.teardown(() => admin.end())
    const { rows } = await admin.query(
      `SELECT n.nspname, p.oid::regprocedure::text AS signature FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE p.proname = $1 AND n.nspname LIKE 'pg_temp%'`,
      [BATCH_STATEMENT.name],
    )
    t.ok(rows.length > 0, 'the function is in a session of the app')
    for (const row of rows) await admin.query(`DROP FUNCTION ${row.nspname}.${row.signature.slice(row.signature.indexOf('.') + 1)}`)
    for (const transaction of ['after-1', 'after-2', 'before']) t.match(await deliver(transaction), { status: transaction === 'before' ? 'duplicate' : 'stored' })
  })

  t.test("the call's read of repeats probes the key's index, also with a plan made on an empty analyzed table", async (t) => {
    const url = await newPostgresDatabase(t, {}, { migrated: true })
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(() => admin.end())
    await admin.query(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('s1', 's1', 'USD')`)
    // The state in which the planner's cheapest read of a key is a sequential scan.
    await admin.query('ANALYZE conversions')
    // One connection: the function, its cached plans and the flushed statistics are of one session.
    const db = await openDatabase(loadConfig({ DATABASE_URL: url, DB_POOL_MAX: '1' }))
    t.teardown(() => db.close())
    const query = db.query.bind(db)
    const delivery = (transaction: string) => ({ sheet_id: 's1', transaction_id: transaction }) as Delivery
    // Scans of the conversions by index (their counts as of the session's last flush).
    const scans = async () => {
      // The session's counts are flushed when its next transaction ends (PostgreSQL 15 and later).
      await db.query({ text: 'SELECT pg_stat_force_next_flush()', values: [] })
      const table = await admin.query(`SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'conversions'`)
      const indexes = await admin.query(`SELECT indexrelname, idx_scan FROM pg_stat_user_indexes WHERE relname = 'conversions'`)
      return { seq: Number(table.rows[0].seq_scan), byIndex: new Map(indexes.rows.map((row) => [row.indexrelname as string, Number(row.idx_scan)])) }
    }
    await writeDeliveries(query, [delivery('a'), delivery('b')])
    const before = await scans()
    // More calls than PostgreSQL's custom plans before it settles on a cached (generic) one.
    for (let call = 0; call < 8; call++) {
      const batch = [delivery('a'), delivery('b'), delivery(`new-${call}`)]
      const outcomes = await writeDeliveries(query, batch)
      t.same(
        batch.map((d) => outcomes.get(keyOf(d))?.status),
        ['duplicate', 'duplicate', 'stored'],
        `call ${call}: the repeats answered from their rows`,
      )
    }
    const after = await scans()
    t.equal(after.seq - before.seq, 0, 'no sequential scan of the conversions')
    const KEY = 'conversions_sheet_id_transaction_id_event_key'
    for (const [index, count] of after.byIndex) {
      // The key's index: each row's check for a conflict and each key's probe by the call's read
      // (it probes every key of the batch), 3 of each a call.
      if (index === KEY) t.ok(count - before.byIndex.get(index)! >= 48, `the repeats' keys probed by their index (${count - before.byIndex.get(index)!} scans)`)
      else t.equal(count - before.byIndex.get(index)!, 0, `no scan of ${index}`)
    }
    t.ok(after.byIndex.has(KEY), 'the key index is there')
  })

  t.test("a small batch's call runs on its cached plans, not ones planned again at every call", async (t) => {
    // PostgreSQL plans a statement of a function again at each call while that custom plan looks
    // cheaper than the cached generic one, as it does for a batch of a few rows. The function's own
    // plan_cache_mode keeps the cached plans.
    const url = await newPostgresDatabase(t, {}, { migrated: true })
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(() => admin.end())
    await admin.query(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('s1', 's1', 'USD')`)
    const db = await openDatabase(loadConfig({ DATABASE_URL: url, DB_POOL_MAX: '1' }))
    t.teardown(() => db.close())
    await writeDeliveries(db.query.bind(db), [{ sheet_id: 's1', transaction_id: 'first' } as Delivery])
    // The function as the app's session made it, made again in a session of the test's own, where
    // every plan made is reported (debug_print_plan: a "plan:" message each) and, unless the
    // function says otherwise, a statement is planned at each run.
    const made = await admin.query(
      `SELECT pg_get_functiondef(p.oid) AS definition FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE p.proname = $1 AND n.nspname LIKE 'pg_temp%'`,
      [BATCH_STATEMENT.name],
    )
    t.equal(made.rows.length, 1, "the function is in the app's session")
    const session = new pg.Client({ connectionString: url })
    await session.connect()
    t.teardown(() => session.end())
    await session.query((made.rows[0].definition as string).replace(/FUNCTION pg_temp_\d+\./, 'FUNCTION pg_temp.'))
    await session.query(`SET plan_cache_mode = force_custom_plan`)
    await session.query(`SET client_min_messages = log`)
    await session.query(`SET debug_print_plan = on`)
    let plans = 0
    session.on('notice', (notice) => {
      if (notice.message === 'plan:') plans++
    })
    const call = `SELECT * FROM pg_temp.${BATCH_STATEMENT.name}(${BATCH_STATEMENT.signature.parameters.map((type, index) => `$${index + 1}::${type}`).join(', ')})`
    // Each call: a new conversion (pending), a move of the one before (to approved: the insert's
    // conflict path and the move's triggers) and a repeat of the one before that (its row read by
    // the function's second statement).
    const batch = (n: number) => {
      const keys = [`tx-${n}`, `tx-${n - 1}`, `tx-${n - 2}`]
      return [['s1', 's1', 's1'], keys, ['', '', ''], ['1.5', null, null], [null, null, null], [null, null, null], [null, null, null], [null, null, null], ['pending', 'approved', 'approved'], [null, null, null]]
    }
    await session.query(call, batch(1))
    await session.query(call, batch(2))
    const planned: number[] = []
    for (let n = 3; n < 9; n++) {
      const before = plans
      const { rows } = await session.query(call, batch(n))
      t.same(
        rows.map((row) => `${row.transaction_id} ${row.outcome} ${row.status}`).sort(),
        [`tx-${n - 2} duplicate approved`, `tx-${n - 1} updated approved`, `tx-${n} stored pending`],
        `call ${n}: stored, moved and repeated`,
      )
      planned.push(plans - before)
    }
    // Each call's own SELECT is planned (the session's setting); the function's statements, its
    // triggers' and the foreign key's checks only until their plans are cached. One call may plan
    // again: anything that invalidates the session's cached plans (a reset of its caches) does that.
    t.ok(planned[0]! >= 1, `a call's own SELECT is planned (${planned[0]} plans)`)
    t.ok(planned.filter((count) => count > 1).length <= 1, `at most one call planned more than its own SELECT (plans a call: ${planned.join(', ')})`)
  })

  t.test('a role without TEMPORARY on its database stores and answers deliveries, repeats too, by plain statements', async (t) => {
    const url = await newPostgresDatabase(t)
    // Migrated by the server's own role, then used by one that may not create temporary objects.
    const owner = await testApp(t, { DATABASE_URL: url })
    await owner.close()
    const role = uniqueId('notemp').replace('-', '_')
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    const database = new URL(url).pathname.slice(1)
    await admin.query(`CREATE ROLE ${role} LOGIN`)
    await admin.query(`REVOKE TEMPORARY ON DATABASE ${database} FROM PUBLIC`)
    // The start-up's check of the migrations creates its table if missing: CREATE on the schema.
    await admin.query(`GRANT CREATE ON SCHEMA public TO ${role}`)
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${role}`)
    await admin.query(`GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}`)
    await admin.query(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('s1', 's1', 'USD')`)
    t.teardown(async () => {
      await admin.query(`DROP OWNED BY ${role}`)
      await admin.query(`DROP ROLE ${role}`)
      await admin.end()
    })
    const restricted = new URL(url)
    restricted.username = role
    const app = await testApp(t, { DATABASE_URL: restricted.toString() })
    const deliver = async (transaction: string) => (await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: 's1', transaction_id: transaction }) })).json()
    const [first, second] = await Promise.all([deliver('a'), deliver('b')])
    t.match(first, { status: 'stored' })
    t.match(second, { status: 'stored' })
    const [repeat, third] = await Promise.all([deliver('a'), deliver('c')])
    t.same(repeat, { status: 'duplicate', conversion_id: first.conversion_id, conversion_status: 'approved' })
    t.match(third, { status: 'stored' })
    const functions = await admin.query(`SELECT count(*)::int AS n FROM pg_proc WHERE proname LIKE 'postback_conversion_batch%'`)
    t.equal(functions.rows[0].n, 0, 'no function was created')
  })
}
