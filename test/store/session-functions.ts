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
