// The batch statement as a function of each connection's session (src/database.ts): on PostgreSQL
// made again when a session loses it, and a role that may not create temporary objects runs the
// statements as they are.
import pg from 'pg'
import t from 'tap'
import { BATCH_STATEMENT } from '../../src/conversion-batch.ts'
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
