// Applies prisma/migrations/*/migration.sql in name order, keeping Prisma's `_prisma_migrations`
// bookkeeping (same table, same checksums), so `prisma migrate deploy` on a machine that has
// Prisma's engine agrees about what is applied. Each migration runs in its own transaction, and a
// PostgreSQL advisory lock keeps instances starting together from applying one twice.
import { createHash, randomUUID } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { SqlSession } from './database.ts'

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
    throw new MigrationError(`migration ${migration.name} failed: ${(error as Error).message}`)
  }
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
