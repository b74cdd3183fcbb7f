// npm run chaos: the long reliability runs, against real processes and the real PostgreSQL.
//   1. kill -9 under load, several rounds, on the embedded store and on PostgreSQL: every delivery
//      acknowledged with a 2xx must be stored after the restart.
//   2. A storm of malformed deliveries: only 4xx, no row; then SIGTERM under load: exit 0, nothing
//      acknowledged lost.
//   3. PostgreSQL stopped mid-load (pg_ctlcluster stop/start): answers are 200 or 503 with
//      Retry-After, readiness goes not-ready, the service recovers without a restart, and nothing
//      acknowledged is lost.
// It prints what it did and what it found, and exits non-zero when a check fails.
import { execFileSync } from 'node:child_process'
import { cpSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { loadGenerator, run, startServer } from '../test/processes.ts'

const ADMIN_URL = process.env.PG_ADMIN_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres'
const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 4)
const LOAD_MS = Number(process.env.CHAOS_LOAD_MS ?? 3000)
const CONCURRENCY = 50
// The load comes from one address: lift the rate limits so that what is measured is storage.
const UNLIMITED = { RECEIVER_RATE_LIMIT: '100000000', RECEIVER_FLOOD_LIMIT: '100000000' }
let failures = 0

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
function check(ok: boolean, what: string): void {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`)
  if (!ok) failures++
}

async function storedIds(env: Record<string, string | undefined>, sheet: string): Promise<Set<string>> {
  if (env.DATABASE_URL) {
    const client = new pg.Client({ connectionString: env.DATABASE_URL })
    await client.connect()
    const { rows } = await client.query('SELECT transaction_id FROM conversions WHERE sheet_id = $1', [sheet])
    await client.end()
    return new Set(rows.map((row: { transaction_id: string }) => row.transaction_id))
  }
  const { loadConfig } = await import('../src/config.ts')
  const { openDatabase } = await import('../src/database.ts')
  const db = await openDatabase(loadConfig({ DATA_DIR: env.DATA_DIR }))
  try {
    const rows = await db.prisma.conversion.findMany({ where: { sheetId: sheet }, select: { transactionId: true } })
    return new Set(rows.map((row) => row.transactionId))
  } finally {
    await db.close()
  }
}

async function killUnderLoad(store: string, env: Record<string, string | undefined>): Promise<void> {
  console.log(`\n== kill -9 under load, ${store}: ${ROUNDS} rounds of ${LOAD_MS} ms at ${CONCURRENCY} connections`)
  const sheet = `chaos-${Date.now()}`
  await run(['bin/postback-admin.js', 'sheet', 'create', '--id', sheet], env)
  const acknowledged: string[] = []
  for (let round = 1; round <= ROUNDS; round++) {
    const server = await startServer({ ...env, ...UNLIMITED })
    const load = loadGenerator(server.url, sheet, CONCURRENCY, `r${round}`)
    await sleep(LOAD_MS * (0.5 + Math.random()))
    server.child.kill('SIGKILL')
    await server.child.output
    await load.stop()
    acknowledged.push(...load.acknowledged)
    console.log(`   round ${round}: killed with -9 after ${load.acknowledged.length} acknowledged; answers ${JSON.stringify([...load.statuses])}`)
  }
  const stored = await storedIds(env, sheet)
  const missing = acknowledged.filter((id) => !stored.has(id))
  // More stored than acknowledged is expected: rows committed whose answer the kill cut off (the
  // network retries them and gets "duplicate"). Fewer would be a loss.
  check(missing.length === 0, `${store}: ${acknowledged.length} acknowledged, ${stored.size} stored, ${missing.length} acknowledged missing`)
}

function pgCluster(action: 'stop' | 'start'): void {
  const version = readdirSync('/etc/postgresql')[0]!
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', action, ...(action === 'stop' ? ['-m', 'fast'] : [])], { stdio: 'inherit' })
}

async function postgresOutage(env: Record<string, string | undefined>): Promise<void> {
  console.log('\n== PostgreSQL stopped mid-load, then started again (no service restart)')
  const sheet = `outage-${Date.now()}`
  await run(['bin/postback-admin.js', 'sheet', 'create', '--id', sheet], env)
  const server = await startServer({ ...env, ...UNLIMITED, DB_CONNECT_TIMEOUT_MS: '2000', DB_STATEMENT_TIMEOUT_MS: '3000' })
  const retryAfter = new Set<string | null>()
  const load = loadGenerator(server.url, sheet, 20, 'o')
  await sleep(2000)
  pgCluster('stop')
  const stoppedAt = Date.now()
  await sleep(1000)
  // While down: what do a delivery and the readiness check say, and how fast?
  const began = Date.now()
  const response = await fetch(`${server.url}/meta/postback/conversion?sheet_id=${sheet}&transaction_id=probe-down`)
  const answeredIn = Date.now() - began
  retryAfter.add(response.headers.get('retry-after'))
  const ready = await fetch(`${server.url}/readyz`)
  check(response.status === 503 && retryAfter.has('5'), `down: a delivery gets ${response.status} with Retry-After ${[...retryAfter]} in ${answeredIn} ms`)
  check(ready.status === 503, `down: /readyz answers ${ready.status}`)
  await sleep(3000)
  pgCluster('start')
  const startedAt = Date.now()
  let recoveredIn = -1
  for (let i = 0; i < 60; i++) {
    const probe = await fetch(`${server.url}/readyz`)
    if (probe.status === 200) {
      recoveredIn = Date.now() - startedAt
      break
    }
    await sleep(500)
  }
  check(recoveredIn >= 0, `recovered by itself ${recoveredIn} ms after PostgreSQL started (down ${startedAt - stoppedAt} ms)`)
  await sleep(2000)
  await load.stop()
  const statuses = [...load.statuses]
  check(statuses.every(([status]) => status === 200 || status === 503), `every answer 200 or 503: ${JSON.stringify(statuses)}`)
  check(server.child.exitCode === null, 'the process kept running')
  server.child.kill('SIGTERM')
  const { code } = await server.child.output
  check(code === 0, `SIGTERM afterwards: exit ${code}`)
  const stored = await storedIds(env, sheet)
  const missing = load.acknowledged.filter((id) => !stored.has(id))
  check(missing.length === 0, `${load.acknowledged.length} acknowledged, ${missing.length} missing`)
}

// Malformed deliveries of the kinds networks and attackers send, as raw query strings.
function malformedQuery(sheet: string, i: number): string {
  const pick = <T>(items: T[]): T => items[Math.floor(Math.random() * items.length)]!
  const junk = () => Array.from({ length: Math.floor(Math.random() * 40) }, () => String.fromCharCode(Math.floor(Math.random() * 0x250))).join('')
  const forms = [
    () => `sheet_id=${sheet}&transaction_id={clickid}`,
    () => `sheet_id=${sheet}&transaction_id=t${i}&payout=${pick(['1,5', 'abc', '1e308', 'NaN', '%ZZ', '99999999999999', '0.0000001'])}`,
    () => `sheet_id=${sheet}&transaction_id=t${i}&currency=${pick(['XYZ', 'usdt', '%24%7Bcurrency%7D', ''])}x`,
    () => `sheet_id=${sheet}&transaction_id=a%00b${i}`,
    () => `sheet_id=${sheet}&transaction_id=t${i}&transaction_id=u${i}`,
    () => `sheet_id=${sheet}&transaction_id=${'x'.repeat(300)}`,
    () => `sheet_id=${sheet}&${encodeURIComponent(junk())}=${encodeURIComponent(junk())}`,
    () => `sheet_id=${sheet}&transaction_id=%${Math.floor(Math.random() * 256).toString(16)}%E2%82`,
    () => `sheet_id=${sheet}&transaction_id=${encodeURIComponent(junk())}%C0%AF&payout=${encodeURIComponent(junk())}`,
    () => `${encodeURIComponent(junk())}`,
  ]
  return pick(forms)()
}

async function malformedStorm(env: Record<string, string | undefined>): Promise<void> {
  const total = 5000
  console.log(`\n== a storm of ${total} malformed deliveries at ${CONCURRENCY} connections, then SIGTERM under load`)
  const sheet = `storm-${Date.now()}`
  await run(['bin/postback-admin.js', 'sheet', 'create', '--id', sheet], env)
  const server = await startServer({ ...env, ...UNLIMITED })
  const statuses = new Map<number, number>()
  let next = 0
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < total) {
        const i = next++
        const response = await fetch(`${server.url}/meta/postback/conversion?${malformedQuery(sheet, i)}`)
        await response.arrayBuffer()
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
      }
    }),
  )
  const counts = [...statuses].sort()
  check(counts.every(([status]) => status >= 400 && status < 500), `storm answers, all 4xx: ${JSON.stringify(counts)}`)
  check((await storedIds(env, sheet)).size === 0, 'storm: no row stored')

  // Graceful shutdown: SIGTERM while deliveries are in flight.
  const load = loadGenerator(server.url, sheet, CONCURRENCY, 'term')
  await sleep(1500)
  const began = Date.now()
  server.child.kill('SIGTERM')
  const { code } = await server.child.output
  const took = Date.now() - began
  await load.stop()
  check(code === 0, `SIGTERM under load: exit ${code} after ${took} ms`)
  const stored = await storedIds(env, sheet)
  const missing = load.acknowledged.filter((id) => !stored.has(id))
  check(missing.length === 0, `SIGTERM under load: ${load.acknowledged.length} acknowledged, ${missing.length} missing; answers ${JSON.stringify([...load.statuses])}`)
}

const admin = new pg.Client({ connectionString: ADMIN_URL })
await admin.connect()
const database = `chaos_${Date.now()}`
await admin.query(`CREATE DATABASE ${database}`)
await admin.end()
const pgUrl = new URL(ADMIN_URL)
pgUrl.pathname = `/${database}`
const pgEnv = { DATABASE_URL: pgUrl.toString() }
const dataDir = mkdtempSync(join(tmpdir(), 'postback-chaos-'))
const template = readdirSync('.tap').find((name) => name.startsWith('pglite-template-'))
if (template) cpSync(join('.tap', template), dataDir, { recursive: true })

try {
  // Only `migrate` (or a server's start-up) changes the schema; the other CLI commands need it current.
  for (const env of [{ DATABASE_URL: '', DATA_DIR: dataDir }, pgEnv]) check((await run(['bin/postback-admin.js', 'migrate'], env)).code === 0, `migrate ${env.DATABASE_URL || 'PGlite'}`)
  await killUnderLoad('embedded store (PGlite)', { DATABASE_URL: '', DATA_DIR: dataDir })
  await killUnderLoad('PostgreSQL', pgEnv)
  await malformedStorm(pgEnv)
  await postgresOutage(pgEnv)
} finally {
  rmSync(dataDir, { recursive: true, force: true })
  try {
    const cleanup = new pg.Client({ connectionString: ADMIN_URL })
    await cleanup.connect()
    await cleanup.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
    await cleanup.end()
  } catch (error) {
    console.log(`could not drop ${database}: ${(error as Error).message}`)
  }
}
console.log(`\n${failures === 0 ? 'all checks passed' : `${failures} checks failed`}`)
process.exit(failures === 0 ? 0 : 1)
