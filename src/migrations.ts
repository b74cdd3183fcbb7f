// Applies prisma/migrations/*/migration.sql in name order, keeping Prisma's `_prisma_migrations`
// bookkeeping (same table, same checksums), so `prisma migrate deploy` on a machine that has
// Prisma's engine agrees about what is applied. Each migration runs in its own transaction, and a
// PostgreSQL advisory lock keeps instances starting together from applying one twice.
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SqlSession } from './database.ts'
import { sqlState } from './storage-errors.ts'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../prisma/migrations', import.meta.url))

// Prisma Migrate's own advisory lock key: this runner and `prisma migrate deploy` exclude each other.
const ADVISORY_LOCK_KEY = 72_707_369
const LOCK_WAIT_MS = 30_000

const BOOKKEEPING_TABLE = `CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
  "id"                  VARCHAR(36) PRIMARY KEY NOT NULL,
  "checksum"            VARCHAR(64) NOT NULL,
  "finished_at"         TIMESTAMPTZ,
  "migration_name"      VARCHAR(255) NOT NULL,
  "logs"                TEXT,
  "rolled_back_at"      TIMESTAMPTZ,
  "started_at"          TIMESTAMPTZ NOT NULL DEFAULT now(),
  "applied_steps_count" INTEGER NOT NULL DEFAULT 0
)`

export interface Migration {
  name: string
  sql: string
  checksum: string
}

export interface MigrationResult {
  applied: string[]
  alreadyApplied: string[]
}

export class MigrationError extends Error {
  override name = 'MigrationError'
}

export function readMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && existsSync(join(dir, entry.name, 'migration.sql')))
    .map((entry) => entry.name)
    .sort()
    .map((name) => {
      const sql = readFileSync(join(dir, name, 'migration.sql'), 'utf8')
      return { name, sql, checksum: createHash('sha256').update(sql).digest('hex') }
    })
}

interface AppliedRow {
  migration_name: string
  checksum: string
  finished_at: Date | null
  rolled_back_at: Date | null
}

export async function migrate(session: SqlSession, migrations = readMigrations()): Promise<MigrationResult> {
  const result: MigrationResult = { applied: [], alreadyApplied: [] }
  await takeLock(session)
  try {
    await session.exec(BOOKKEEPING_TABLE)
    const rows = await session.query<AppliedRow>(
      'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations"',
    )
    for (const migration of migrations) {
      const records = rows.filter((row) => row.migration_name === migration.name && row.rolled_back_at === null)
      if (records.some((row) => row.finished_at !== null)) {
        result.alreadyApplied.push(migration.name)
        continue
      }
      if (records.length > 0) {
        throw new MigrationError(
          `migration ${migration.name} was started earlier and did not finish; repair the database, ` +
            'then mark it rolled back (prisma migrate resolve --rolled-back) before starting again',
        )
      }
      await apply(session, migration)
      result.applied.push(migration.name)
    }
  } finally {
    await session.query('SELECT pg_advisory_unlock($1)', [ADVISORY_LOCK_KEY])
  }
  return result
}

async function takeLock(session: SqlSession): Promise<void> {
  const deadline = Date.now() + LOCK_WAIT_MS
  for (;;) {
    const [row] = await session.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1) AS locked', [ADVISORY_LOCK_KEY])
    if (row?.locked) return
    if (Date.now() > deadline) {
      throw new MigrationError(`another migration run has held the migration lock for ${LOCK_WAIT_MS / 1000} s; try again when it ends`)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

async function apply(session: SqlSession, migration: Migration): Promise<void> {
  await session.exec('BEGIN')
  try {
    const id = randomUUID()
    await session.query(
      'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) VALUES ($1, $2, $3, now())',
      [id, migration.checksum, migration.name],
    )
    await session.exec(migration.sql)
    await session.query(
      'UPDATE "_prisma_migrations" SET finished_at = now(), applied_steps_count = 1 WHERE id = $1',
      [id],
    )
    await session.exec('COMMIT')
  } catch (error) {
    await session.exec('ROLLBACK')
    if (sqlState(error) === LOCK_NOT_AVAILABLE) throw new MigrationError(await lockWaitMessage(session, migration))
    throw new MigrationError(`migration ${migration.name} failed: ${(error as Error).message}`)
  }
}

// SQLSTATE of a lock wait that reached the session's lock_timeout (MIGRATION_LOCK_TIMEOUT_MS).
const LOCK_NOT_AVAILABLE = '55P03'

interface LockHolder {
  relation: string
  pid: number
  application_name: string | null
  state: string | null
  seconds: number
}

// Who holds locks on this schema's tables in a transaction older than the wait: the likely blockers
// (the statement that waited is cancelled by now, so PostgreSQL can no longer say which lock it was).
const LOCK_HOLDERS = `SELECT c.relname AS relation, a.pid, a.application_name, a.state,
    floor(extract(epoch FROM now() - a.xact_start))::int AS seconds
  FROM pg_locks l
  JOIN pg_class c ON c.oid = l.relation
  JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE l.granted AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace
    AND a.xact_start <= now() - current_setting('lock_timeout')::interval
  ORDER BY a.xact_start, c.relname
  LIMIT 5`

async function lockWaitMessage(session: SqlSession, migration: Migration): Promise<string> {
  const [setting] = await session.query<{ setting: string }>("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'")
  const waited = `${Number(setting?.setting) / 1000} s`
  const holders = await session.query<LockHolder>(LOCK_HOLDERS).catch(() => [])
  const advice = 'end that session or wait for it to finish, then start again (MIGRATION_LOCK_TIMEOUT_MS sets the wait)'
  if (holders.length === 0) return `migration ${migration.name} waited ${waited} for a lock that another session holds; ${advice}`
  const relations = [...new Set(holders.map((holder) => holder.relation))].join(', ')
  const sessions = holders
    .filter((holder, index) => holders.findIndex((other) => other.pid === holder.pid) === index)
    .map((holder) => `pid ${holder.pid} (${holder.application_name || 'no application name'}, ${holder.state ?? 'state unknown'} for ${holder.seconds} s)`)
  return `migration ${migration.name} waited ${waited} for a lock on ${relations}; another session holds it: ${sessions.join(', ')}; ${advice}`
}

/**
 * The names of the migrations not yet applied, read without changing anything: no lock taken and
 * no bookkeeping table created (a store that has none has every migration pending).
 */
export async function pendingMigrations(session: SqlSession, migrations = readMigrations()): Promise<string[]> {
  const [table] = await session.query<{ found: string | null }>(`SELECT to_regclass('"_prisma_migrations"')::text AS found`)
  if (!table?.found) return migrations.map((migration) => migration.name)
  const rows = await session.query<{ migration_name: string }>(
    'SELECT migration_name FROM "_prisma_migrations" WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
  )
  const applied = new Set(rows.map((row) => row.migration_name))
  return migrations.filter((migration) => !applied.has(migration.name)).map((migration) => migration.name)
}
