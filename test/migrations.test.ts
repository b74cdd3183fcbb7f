// The migration runner on an empty database: Prisma's bookkeeping, idempotence, failure handling.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { createSheet } from '../src/sheets.ts'
import { openDatabase, type Database } from '../src/database.ts'
import { migrate, MIGRATIONS_DIR, readMigrations, type Migration } from '../src/migrations.ts'
import { newPostgresDatabase, onPostgres, pgliteCopy } from './helpers.ts'

/** An empty database: a new one on the PostgreSQL server, or a new PGlite folder. */
async function emptyDatabase(): Promise<Database> {
  if (onPostgres) {
    const db = await openDatabase(loadConfig({ DATABASE_URL: await newPostgresDatabase(t) }))
    t.teardown(() => db.close())
    return db
  }
  // A copy of a first-opened, unmigrated folder: the same empty store without initdb's 5 to 7 s.
  const db = await openDatabase(loadConfig({ DATA_DIR: pgliteCopy(t, { migrated: false }) }))
  t.teardown(() => db.close())
  return db
}

const db = await emptyDatabase()
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
  t.same(tables.map((row) => row.table_name), ['_prisma_migrations', 'api_keys', 'conversions', 'delivery_counters', 'delivery_rejections', 'sheets'])

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
if (onPostgres) t.test('runners started together apply each migration once', async (t) => {
  const migrations = [{ name: '29990103000000_counter', sql: 'CREATE TABLE counter_once (id int);', checksum: 'z' }]
  const results = await Promise.all([1, 2, 3].map(() => run([...readMigrations(), ...migrations])))
  t.equal(results.filter((result) => result.applied.includes('29990103000000_counter')).length, 1)
})

// PostgreSQL only: a database whose own time zone is not UTC still stores and reads true instants.
if (onPostgres) t.test('timestamps are right when the database time zone is not UTC', async (t) => {
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
