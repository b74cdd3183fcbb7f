// Test helpers: an app on a real store (a copy of a prepared PGlite folder, or the PostgreSQL that
// DATABASE_URL names), sheets with unique ids so test files never step on each other, and a
// receiver URL builder.
import { execFileSync } from 'node:child_process'
import { accessSync, closeSync, constants, cpSync, mkdtempSync, openSync, readSync, rmSync, statfsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { Writable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { buildApp } from '../src/app.ts'
import { loadConfig, type Config } from '../src/config.ts'
import { createApiKey } from '../src/api-keys.ts'
import { createClient, type PostbackClient } from '../client/src/index.ts'
import { run as runAdmin } from '../src/cli.ts'
import { openDatabase, type Database, type PrismaClient } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { createSheet } from '../src/sheets.ts'
import { EMPTY_TEMPLATE_DIR, TEMPLATE_DIR } from './setup.ts'

export const onPostgres = Boolean(process.env.DATABASE_URL)

interface Test {
  teardown(fn: () => unknown): void
}

/**
 * Where tests make folders: TEST_SCRATCH_DIR, else /dev/shm (memory) where the machine has it with
 * room to spare, else the OS temp folder. A PGlite data folder is about 1,000 files and 40 MB:
 * copying one onto this machine's disk took 0.7 to 1 s of system time, onto /dev/shm 0.04 s (a third
 * of the suite's CPU went there). An area's files keep their stores open until the area ends, and
 * four areas run at once: a container's default /dev/shm (64 MB) is far too small, hence the 2 GB.
 * PGlite runs the same on either; only a machine crash, which no test makes, tells them apart.
 */
const SCRATCH = process.env.TEST_SCRATCH_DIR || (roomy('/dev/shm', 2 * 1024 ** 3) ? '/dev/shm' : tmpdir())

function roomy(dir: string, bytes: number): boolean {
  try {
    accessSync(dir, constants.W_OK)
    const { bavail, bsize } = statfsSync(dir)
    return bavail * bsize >= bytes
  } catch {
    return false
  }
}

/** A new empty folder for this test, removed after it. */
export function scratchDir(t: Test, prefix = 'postback-test-'): string {
  const dir = mkdtempSync(join(SCRATCH, prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/**
 * A fresh PGlite data folder, copied from a template that test/setup.ts prepares: migrated, or with
 * `{ migrated: false }` a store as a first open leaves it (initdb done, no tables).
 */
export function pgliteCopy(t: Test, { migrated = true } = {}): string {
  const dir = scratchDir(t)
  cpSync(migrated ? TEMPLATE_DIR : EMPTY_TEMPLATE_DIR, dir, { recursive: true })
  return dir
}

/** Settings for a program run on the test store: the PostgreSQL that DATABASE_URL names, or a fresh copy of the PGlite template. */
export function storeEnv(t: Test): Record<string, string> {
  return onPostgres ? { DATABASE_URL: process.env.DATABASE_URL! } : { DATABASE_URL: '', DATA_DIR: pgliteCopy(t) }
}

export interface AdminResult {
  code: number
  stdout: string
  stderr: string
  /** The last stdout line, parsed: the command's JSON result. */
  result: any
}

/**
 * postback-admin run in this process (src/cli.ts), with exactly the settings in `env`, each command
 * opening and closing its store (bin/postback-admin.js has its own spawned test).
 */
export function admin(env: Record<string, string | undefined>, ...args: string[]): Promise<AdminResult> {
  return adminOn(env)(...args)
}

/** postback-admin commands in this process; with `store`, every command uses that open store and leaves it open. */
export function adminOn(env: Record<string, string | undefined>, store?: Database): (...args: string[]) => Promise<AdminResult> {
  const openDatabase = store && (async () => ({ ...store, close: async () => {} }))
  return async (...args) => {
    const output = { stdout: '', stderr: '' }
    const code = await runAdmin(args, env, {
      stdout: { write: (text: string) => (output.stdout += text) },
      stderr: { write: (text: string) => (output.stderr += text) },
      openDatabase,
    })
    const last = output.stdout.trim().split('\n').at(-1)
    return { code, ...output, result: last ? JSON.parse(last) : undefined }
  }
}

/**
 * A new, empty database on the PostgreSQL server that DATABASE_URL names, with the given database
 * settings (`migrated`: with the app's tables); dropped after the test (teardowns run last-added
 * first, so a store closed in a later teardown is closed before). Returns its URL.
 */
export async function newPostgresDatabase(t: Test, settings: Record<string, string> = {}, { migrated = false } = {}): Promise<string> {
  const name = uniqueId('test').replace('-', '_')
  const server = new pg.Client({ connectionString: process.env.DATABASE_URL })
  await server.connect()
  await server.query(`CREATE DATABASE ${name}`)
  for (const [setting, value] of Object.entries(settings)) await server.query(`ALTER DATABASE ${name} SET ${setting} = '${value}'`)
  t.teardown(async () => {
    await server.query(`DROP DATABASE ${name} WITH (FORCE)`)
    await server.end()
  })
  const url = new URL(process.env.DATABASE_URL!)
  url.pathname = `/${name}`
  if (migrated) {
    const store = await openDatabase(loadConfig({ DATABASE_URL: url.toString() }))
    try {
      await store.withSession((session) => migrate(session))
    } finally {
      await store.close()
    }
  }
  return url.toString()
}

/**
 * Polls (every 20 ms, `attempts` times at most) until a session waits on a lock that `client`'s
 * session holds; whether one did, so that a race test can say it raced (a session of another test
 * file waiting on a lock of its own does not count).
 */
export async function awaitLockWaiter(client: pg.Client, attempts = 50): Promise<boolean> {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const waiting = await client.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid))`)
    if (waiting.rows[0].n > 0) return true
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return false
}

/**
 * Waits, 30 s at most, until every transaction that began before now has ended anywhere on the
 * database server: the change feed and the rollup fold see a change only below that horizon, and on
 * PostgreSQL another test's open transaction, in any database, holds it back for a while.
 */
export async function awaitHorizon(prisma: PrismaClient): Promise<void> {
  const [{ now }] = await prisma.$queryRaw<[{ now: string }]>`SELECT pg_current_xact_id()::text AS now`
  const deadline = Date.now() + 30_000
  for (;;) {
    const [{ past }] = await prisma.$queryRaw<[{ past: boolean }]>`SELECT pg_snapshot_xmin(pg_current_snapshot()) > ${now}::xid8 AS past`
    if (past || Date.now() > deadline) return
    await delay(50)
  }
}

/** A new FIFO's two ends, both non-blocking; each is closed after the test unless the test closed it (`close`). */
export function fifoEnds(t: Test) {
  const fifo = join(scratchDir(t), 'pipe')
  execFileSync('mkfifo', [fifo])
  const readFd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  const writeFd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  const open = new Set([readFd, writeFd])
  t.teardown(() => open.forEach((fd) => closeSync(fd)))
  return {
    readFd,
    writeFd,
    close: (fd: number) => {
      open.delete(fd)
      closeSync(fd)
    },
  }
}

/** What a pipe's reader has read so far (readUntil). */
export interface ReadSoFar {
  bytes: number
  newlines: number
}

/**
 * Reads a non-blocking pipe's read end into `read` until `done` holds, `timeoutMs` at most (between
 * reads, the writer's retries run). `done` is given the bytes and newlines in `read`, counted as
 * chunks come in: joining every chunk read at each check (4 MB, 64 KB a read) took longer than the
 * wait on a busy CI machine.
 */
export async function readUntil(readFd: number, read: Buffer[], done: (soFar: ReadSoFar) => boolean, timeoutMs = 5000): Promise<void> {
  const soFar: ReadSoFar = { bytes: 0, newlines: 0 }
  const count = (chunk: Buffer) => {
    soFar.bytes += chunk.length
    for (let at = chunk.indexOf(10); at !== -1; at = chunk.indexOf(10, at + 1)) soFar.newlines++
  }
  read.forEach(count)
  const buffer = Buffer.alloc(65_536)
  const deadline = performance.now() + timeoutMs
  while (!done(soFar) && performance.now() < deadline) {
    try {
      const n = readSync(readFd, buffer)
      const chunk = Buffer.from(buffer.subarray(0, n))
      read.push(chunk)
      count(chunk)
      // End of file: every writer has gone.
      if (n === 0) await delay(20)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') throw error
      // Room in the pipe: the waiting chunks are offered again within a few milliseconds.
      await delay(2)
    }
  }
}

/** A config for tests: PostgreSQL when DATABASE_URL is set, else a fresh copy of the PGlite template. */
export function testConfig(t: Test, overrides: Record<string, string> = {}): Config {
  // Background folds of the summary rollups only where a test asks for them (they are folded by the
  // tests of the rollups themselves): a first fold in a new store costs a third of a second of CPU.
  const env: Record<string, string | undefined> = { LOG_LEVEL: 'silent', DATABASE_URL: process.env.DATABASE_URL, ROLLUP_FOLD_INTERVAL_MS: '3600000', ...overrides }
  if (!env.DATABASE_URL && !env.DATA_DIR) env.DATA_DIR = pgliteCopy(t)
  return loadConfig(env)
}

export async function testApp(t: Test, overrides: Record<string, string> = {}): Promise<FastifyInstance> {
  const app = await buildApp(testConfig(t, overrides))
  t.teardown(() => app.close())
  await app.ready()
  return app
}

export function uniqueId(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`
}

export async function newSheet(app: FastifyInstance, currency = 'USD'): Promise<string> {
  const sheet = await createSheet(app.prisma, { sheetId: uniqueId('sheet'), currency })
  return sheet.sheet_id
}

export function receiverUrl(params: Record<string, string | string[]>): string {
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) {
    for (const one of Array.isArray(value) ? value : [value]) search.append(name, one)
  }
  return `/meta/postback/conversion?${search}`
}

/** Creates an API key (global, or scoped to the given sheets) and returns its Authorization header. */
export async function newKeyHeader(app: FastifyInstance, scope: { global: true } | { sheetIds: string[] }): Promise<{ authorization: string }> {
  const created = await createApiKey(app.prisma, 'global' in scope ? { global: true } : { sheetIds: scope.sheetIds })
  return { authorization: `Bearer ${created.key}` }
}

/** Stores conversions through the receiver; returns their ids in order. */
export async function deliverAll(app: FastifyInstance, deliveries: Array<Record<string, string>>): Promise<string[]> {
  const ids: string[] = []
  for (const delivery of deliveries) {
    const response = await app.inject({ method: 'GET', url: receiverUrl(delivery) })
    if (response.statusCode !== 200) throw new Error(`delivery refused: ${response.body}`)
    ids.push(response.json().conversion_id)
  }
  return ids
}

/** Listens on a free loopback port; the app's teardown closes it. Returns the base URL. */
export async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address() as { port: number }
  return `http://127.0.0.1:${address.port}`
}

/** The typed client (@postback-store/client) of a listening app, with a new key of the given scope. */
export async function apiClient(app: FastifyInstance, baseUrl: string, scope: { global: true } | { sheetIds: string[] }): Promise<PostbackClient> {
  const { authorization } = await newKeyHeader(app, scope)
  return createClient({ baseUrl, apiKey: authorization.slice('Bearer '.length) })
}

/**
 * For concurrent deliveries of the same keys: the keys whose answers are not exactly one `stored`
 * and the rest `duplicate`, with those answers (empty when all is well). The unique index alone
 * makes "one row per key" true, so a test of concurrency checks the answers with this.
 */
export function keysNotStoredOnce(answers: Array<{ key: string; status: string }>): Array<[string, string[]]> {
  const byKey = new Map<string, string[]>()
  for (const { key, status } of answers) byKey.set(key, [...(byKey.get(key) ?? []), status])
  return [...byKey].filter(([, statuses]) => statuses.filter((s) => s === 'stored').length !== 1 || statuses.some((s) => s !== 'stored' && s !== 'duplicate'))
}

/** A logger destination that keeps what the app logs: pass `{ logger: { level, stream } }` to buildApp. */
export function capturedLog<Line = Record<string, unknown>>() {
  const raw: string[] = []
  const stream = new Writable({
    write(chunk, _encoding, done) {
      raw.push(...String(chunk).split('\n').filter(Boolean))
      done()
    },
  })
  return { stream, raw, lines: (): Line[] => raw.map((line) => JSON.parse(line) as Line) }
}
