// Runs once before the suite (.taprc `before`): prepares a migrated PGlite data folder that each
// test copies, and an empty one (initdb only) for tests of a fresh store, so no test pays PGlite's
// initdb (5 to 7 s) itself. The store's modules (PGlite, Prisma) are loaded only when there is
// work, as this runs, serially, before every suite.
import { createHash } from 'node:crypto'
import { cpSync, existsSync, renameSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Config } from '../src/config.ts'
import { readMigrations } from '../src/migrations.ts'

const migrations = readMigrations()
const version = createHash('sha256').update(migrations.map((m) => m.checksum).join()).digest('hex').slice(0, 12)
export const TEMPLATE_DIR = fileURLToPath(new URL(`../.tap/pglite-template-${version}`, import.meta.url))
export const EMPTY_TEMPLATE_DIR = fileURLToPath(new URL(`../.tap/pglite-empty-${version}`, import.meta.url))

async function prepare(): Promise<void> {
  if (existsSync(TEMPLATE_DIR) && existsSync(EMPTY_TEMPLATE_DIR)) return
  const [{ loadConfig }, { openDatabase }] = await Promise.all([import('../src/config.ts'), import('../src/database.ts')])
  const staging = `${TEMPLATE_DIR}.${process.pid}`
  const empty = await openDatabase(loadConfig({ DATA_DIR: staging }))
  await empty.close()
  cpSync(staging, `${EMPTY_TEMPLATE_DIR}.${process.pid}`, { recursive: true })
  rmSync(EMPTY_TEMPLATE_DIR, { recursive: true, force: true })
  renameSync(`${EMPTY_TEMPLATE_DIR}.${process.pid}`, EMPTY_TEMPLATE_DIR)
  await migrateStore({ DATA_DIR: staging })
  rmSync(TEMPLATE_DIR, { recursive: true, force: true })
  renameSync(staging, TEMPLATE_DIR)
}

async function migrateStore(settings: Partial<Record<keyof Config, string>>): Promise<void> {
  const [{ loadConfig }, { openDatabase }, { migrate }] = await Promise.all([
    import('../src/config.ts'),
    import('../src/database.ts'),
    import('../src/migrations.ts'),
  ])
  const db = await openDatabase(loadConfig(settings))
  try {
    await db.withSession((session) => migrate(session))
  } finally {
    await db.close()
  }
}

// Prepared on both stores: the embedded-store tests (data folder lock, CLI) use it in either run.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await prepare()
  // The PostgreSQL pass's database (a fresh one in CI) is migrated once, as a deploy would: only
  // `postback-admin migrate` and app start-up migrate, and test files using the CLI run in parallel.
  if (process.env.DATABASE_URL) await migrateStore({ DATABASE_URL: process.env.DATABASE_URL })
}
