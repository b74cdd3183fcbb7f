// The migration runner on an empty database: Prisma's bookkeeping, idempotence, failure handling.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { changesPage, ChangeSignal } from '../../src/changes.ts'
import { loadConfig } from '../../src/config.ts'
import { createSheet } from '../../src/sheets.ts'
import { openDatabase, type Database } from '../../src/database.ts'
import { migrate, MIGRATIONS_DIR, readMigrations, type Migration } from '../../src/migrations.ts'
import { awaitHorizon, newPostgresDatabase, onPostgres, pgliteCopy } from '../helpers.ts'

/** An empty database: a new one on the PostgreSQL server (with its URL), or a new PGlite folder. */
async function emptyDatabase(): Promise<{ db: Database; url?: string }> {
  if (onPostgres) {
    const url = await newPostgresDatabase(t)
    const db = await openDatabase(loadConfig({ DATABASE_URL: url }))
    t.teardown(() => db.close())
    return { db, url }
  }
  // A copy of a first-opened, unmigrated folder: the same empty store without initdb's 5 to 7 s.
  const db = await openDatabase(loadConfig({ DATA_DIR: pgliteCopy(t, { migrated: false }) }))
  t.teardown(() => db.close())
  return { db }
}

const { db, url: emptyUrl } = await emptyDatabase()
const run = (migrations?: Migration[]) => db.withSession((session) => migrate(session, migrations))
const bookkeeping = () =>
  db.withSession((session) =>
    session.query<{ migration_name: string; checksum: string; finished_at: Date | null; applied_steps_count: number }>(
      'SELECT migration_name, checksum, finished_at, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name',
    ),
  )

t.test('applies every migration once, with Prisma-compatible bookkeeping', async (t) => {
  const local = readMigrations()
  t.ok(local.length >= 1)
  const first = await run()
  t.same(first, { applied: local.map((m) => m.name), alreadyApplied: [] })
  const rows = await bookkeeping()
  t.same(rows.map((row) => row.migration_name), local.map((m) => m.name))
  for (const row of rows) {
    const sql = readFileSync(join(MIGRATIONS_DIR, row.migration_name, 'migration.sql'))
    t.equal(row.checksum, createHash('sha256').update(sql).digest('hex'), 'checksum is the SHA-256 of migration.sql')
    t.ok(row.finished_at instanceof Date)
    t.equal(row.applied_steps_count, 1)
  }
  const tables = await db.withSession((session) =>
    session.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    ),
  )
  t.same(tables.map((row) => row.table_name), ['_prisma_migrations', 'api_keys', 'conversion_history', 'conversion_rollups', 'conversions', 'delivery_counters', 'delivery_rejections', 'rollup_phases', 'rollup_state', 'sheets'])

  const second = await run()
  t.same(second, { applied: [], alreadyApplied: local.map((m) => m.name) }, 'a second run applies nothing')
})

t.test('a failing migration leaves nothing behind and names itself', async (t) => {
  const broken: Migration = { name: '29990101000000_broken', sql: 'CREATE TABLE half_done (id int); SELECT no_such_function();', checksum: 'x' }
  await t.rejects(run([...readMigrations(), broken]), { name: 'MigrationError', message: /29990101000000_broken failed/ })
  const rows = await bookkeeping()
  t.notOk(rows.some((row) => row.migration_name === broken.name), 'no bookkeeping row')
  const [exists] = await db.withSession((session) => session.query<{ found: string | null }>("SELECT to_regclass('half_done')::text AS found"))
  t.equal(exists?.found, null, 'its statements were rolled back')
})

t.test('a migration recorded as started but unfinished stops the runner', async (t) => {
  const pending: Migration = { name: '29990102000000_pending', sql: 'SELECT 1;', checksum: 'y' }
  await db.withSession((session) =>
    session.query(`INSERT INTO "_prisma_migrations" (id, checksum, migration_name) VALUES ('00000000-0000-0000-0000-000000000001', 'y', $1)`, [pending.name]),
  )
  await t.rejects(run([...readMigrations(), pending]), { name: 'MigrationError', message: /29990102000000_pending was started earlier/ })
})

// PostgreSQL only (PGlite is one process): this runs in the suite's PostgreSQL pass.
if (onPostgres) {
  t.test('runners started together apply each migration once', async (t) => {
    const migrations = [{ name: '29990103000000_counter', sql: 'CREATE TABLE counter_once (id int);', checksum: 'z' }]
    const results = await Promise.all([1, 2, 3].map(() => run([...readMigrations(), ...migrations])))
    t.equal(results.filter((result) => result.applied.includes('29990103000000_counter')).length, 1)
  })
}

// PostgreSQL only (PGlite has no statement timeout): a migration may take longer than any request,
// a CREATE INDEX on a large table, say; the pool's statement and read timeouts must not stop it.
if (onPostgres) {
  t.test('a migration longer than DB_STATEMENT_TIMEOUT_MS (and the read timeout) is applied', async (t) => {
    const short = await openDatabase(loadConfig({ DATABASE_URL: emptyUrl, DB_STATEMENT_TIMEOUT_MS: '300' }))
    t.teardown(() => short.close())
    // 1.5 s: longer than the statement timeout (300 ms) and pg's client-side read timeout (1300 ms).
    const slow: Migration = { name: '29990104000000_slow', sql: 'SELECT pg_sleep(1.5);', checksum: 's' }
    const result = await short.withSession((session) => migrate(session, [...readMigrations(), slow]))
    t.same(result.applied, [slow.name])
  })
}

// PostgreSQL only (PGlite is one session): a migration waiting for a lock that another session holds
// gives up after MIGRATION_LOCK_TIMEOUT_MS and names the lock and its holder, instead of hanging.
if (onPostgres) {
  t.test("a migration blocked by another session's lock fails within the lock timeout, saying so", async (t) => {
    const target: Migration = { name: '29990105000000_lock_target', sql: 'CREATE TABLE lock_target (id int);', checksum: 'l' }
    await run([...readMigrations(), target])
    const holder = new pg.Client({ connectionString: emptyUrl, application_name: 'lock-holder' })
    await holder.connect()
    t.teardown(() => holder.end())
    await holder.query('BEGIN')
    await holder.query('SELECT * FROM lock_target')

    const short = await openDatabase(loadConfig({ DATABASE_URL: emptyUrl, MIGRATION_LOCK_TIMEOUT_MS: '1000' }))
    t.teardown(() => short.close())
    const alter: Migration = { name: '29990106000000_alter', sql: 'ALTER TABLE lock_target ADD COLUMN note text;', checksum: 'a' }
    const began = Date.now()
    await t.rejects(short.withSession((session) => migrate(session, [...readMigrations(), target, alter])), {
      name: 'MigrationError',
      message: /^migration 29990106000000_alter waited 1 s for a lock on lock_target; another session holds it: pid \d+ \(lock-holder, idle in transaction/,
    })
    const elapsed = Date.now() - began
    t.ok(elapsed < 4000, `gave up in ${elapsed} ms`)

    await holder.query('ROLLBACK')
    const after = await short.withSession((session) => migrate(session, [...readMigrations(), target, alter]))
    t.same(after.applied, [alter.name], 'applied once the lock is free')
  })
}

// PostgreSQL only: a database whose own time zone is not UTC still stores and reads true instants.
if (onPostgres) {
  t.test('timestamps are right when the database time zone is not UTC', async (t) => {
    const url = await newPostgresDatabase(t, { timezone: 'America/New_York' })
    const app = await buildApp(loadConfig({ DATABASE_URL: url, LOG_LEVEL: 'silent' }))
    t.teardown(() => app.close())
    const sheet = await createSheet(app.prisma, { sheetId: 'tz-sheet' })
    const before = Date.now()
    const response = await app.inject({ method: 'GET', url: `/meta/postback/conversion?sheet_id=${sheet.sheet_id}&transaction_id=t` })
    t.equal(response.statusCode, 200)
    const [row] = await app.prisma.conversion.findMany({ where: { sheetId: sheet.sheet_id } })
    t.ok(Math.abs(row!.receivedAt.getTime() - before) < 60_000, `received_at ${row!.receivedAt.toISOString()} is now`)
    t.ok(Math.abs(Date.parse(sheet.created_at) - before) < 60_000, `created_at ${sheet.created_at} is now`)
  })
}

t.test('the lifecycle migration makes existing rows approved base conversions, and their keys stay unique', async (t) => {
  const { db: older } = await emptyDatabase()
  const all = readMigrations()
  const lifecycle = all.findIndex((m) => m.name.endsWith('_lifecycle'))
  t.ok(lifecycle > 0, 'the lifecycle migration is there')
  await older.withSession(async (session) => {
    await migrate(session, all.slice(0, lifecycle))
    await session.exec(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('old', 'old', 'USD');
      INSERT INTO conversions (sheet_id, transaction_id, payout, currency) VALUES ('old', 't1', 1.50, 'USD'), ('old', 't2', NULL, 'EUR')`)
    await migrate(session, all)
    const rows = await session.query<Record<string, unknown>>(
      `SELECT transaction_id, event, status, network_status, updated_at, payout::text AS payout FROM conversions ORDER BY transaction_id`,
    )
    t.same(rows, [
      { transaction_id: 't1', event: '', status: 'approved', network_status: null, updated_at: null, payout: '1.50' },
      { transaction_id: 't2', event: '', status: 'approved', network_status: null, updated_at: null, payout: null },
    ])
    await t.rejects(session.exec(`INSERT INTO conversions (sheet_id, transaction_id, currency) VALUES ('old', 't1', 'USD')`), { code: '23505' }, 'the key is still unique')
  })
})

t.test('the change-feed migration puts stored and moved conversions in the feed, inserts first, then later moves after them', async (t) => {
  const { db: older } = await emptyDatabase()
  const all = readMigrations()
  const feed = all.findIndex((m) => m.name.endsWith('_change_feed'))
  t.ok(feed > 0, 'the change-feed migration is there')
  await older.withSession(async (session) => {
    await migrate(session, all.slice(0, feed))
    // Stored and moved under the older schema: 'm' pending then approved (a history of two entries).
    await session.exec(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('old', 'old', 'USD');
      INSERT INTO conversions (sheet_id, transaction_id, currency, status) VALUES ('old', 's', 'USD', 'approved'), ('old', 'm', 'USD', 'pending');
      UPDATE conversions SET status = 'approved', updated_at = now() WHERE transaction_id = 'm'`)
    await migrate(session, all)
    // A move after the migration.
    await session.exec(`UPDATE conversions SET status = 'rejected', updated_at = now() WHERE transaction_id = 'm'`)
  })
  await awaitHorizon(older.prisma)
  const page = await changesPage(older.prisma, new ChangeSignal(), null, {})
  t.same(
    page.data.map((change) => `${change.kind} ${change.conversion.transaction_id} ${change.conversion.status}`),
    ['stored s approved', 'stored m pending', 'updated m approved', 'updated m rejected'],
  )
})
