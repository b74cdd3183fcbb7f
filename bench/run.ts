// `npm run bench`: the receiver against its baselines, in one run, with one load generator.
// For each store (a fresh PostgreSQL database, a fresh PGlite data folder) and each request mix
// (unique transaction ids; half of them repeats), it starts bench/server.ts as a child process and
// drives with autocannon, from this process: (a) GET /bench/noop, no database work, (b) the naive
// receiver, one Prisma write per request, (c) the real receiver. It prints requests/s, p50/p99,
// the server's peak RSS, the ratios (c)/(a) and (c)/(b), and then checks that every delivery
// answered 200 is in the database with the id it was answered with. Last, an overload case: far
// more connections than the queue admits, every answer a 2xx or a 503 and memory bounded.
// Options: see `npm run bench -- --help`.
import { spawn } from 'node:child_process'
import { cpSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import pg from 'pg'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { createSheet } from '../src/sheets.ts'
import { NAIVE_RECEIVER_PATH } from './naive-receiver.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RECEIVER_PATH = '/meta/postback/conversion'
const NOOP_PATH = '/bench/noop'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '50' },
    stores: { type: 'string', default: 'postgresql,pglite' },
    mixes: { type: 'string', default: 'unique,half-repeats' },
    routes: { type: 'string', default: 'noop,receiver,naive' },
    overload: { type: 'string', default: 'postgresql,pglite' },
    'overload-connections': { type: 'string', default: '1000' },
    'overload-queue': { type: 'string', default: '200' },
    'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' },
    env: { type: 'string', multiple: true, default: [] },
    'cpu-prof': { type: 'string' },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
})

if (args.help) {
  console.log(`npm run bench -- [options]
  --duration S               measured seconds per case (10)
  --warmup S                 warm-up seconds per case, not measured (3)
  --connections N            concurrent connections (50)
  --stores LIST              postgresql,pglite
  --mixes LIST               unique,half-repeats
  --routes LIST              noop,receiver,naive
  --overload LIST            stores to run the overload case on (postgresql,pglite; '' for none)
  --overload-connections N   (1000)
  --overload-queue N         RECEIVER_QUEUE_MAX in the overload case (200)
  --pg-url URL               a PostgreSQL URL to create and drop the benchmark database through
  --env NAME=VALUE           extra environment for the server under test (repeatable), e.g. RECEIVER_BATCH_MAX=1000
  --cpu-prof DIR             write a V8 CPU profile of each server under test into DIR
  --json FILE                also write the results as JSON`)
  process.exit(0)
}

type Store = 'postgresql' | 'pglite'
type Route = 'noop' | 'receiver' | 'naive'
type Mix = 'unique' | 'half-repeats'

const list = (text: string) => text.split(',').map((s) => s.trim()).filter(Boolean)
const duration = Number(args.duration)
const warmup = Number(args.warmup)
const connections = Number(args.connections)
const stores = list(args.stores) as Store[]
const mixes = list(args.mixes) as Mix[]
const routes = list(args.routes) as Route[]
const overloadStores = list(args.overload) as Store[]
const serverEnv = Object.fromEntries(args.env.map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]))
const PATHS: Record<Route, string> = { noop: NOOP_PATH, receiver: RECEIVER_PATH, naive: NAIVE_RECEIVER_PATH }

interface CaseResult {
  store: Store
  route: Route
  mix: Mix | 'overload'
  connections: number
  requestsPerSecond: number
  p50: number
  p99: number
  peakRssMb: number
  rssFirstHalfMb: number
  rssSecondHalfMb: number
  statuses: Record<string, number>
  errors: number
  timeouts: number
  acknowledged: number
  missing: number | null
  wrongId: number | null
  loadBefore: number
  /** CPU used during the measured run, in % of one core: the server, this load generator, PostgreSQL's processes. */
  cpu: { server: number; loadGenerator: number; postgres: number }
  /** Deliveries per batch statement (the receiver's postback_batch_size), measured run and warm-up. */
  averageBatch: number | null
}

/** One store under test: how the server reaches it, and a way to read it back after the server stopped. */
interface StoreHandle {
  kind: Store
  /** The PostgreSQL database's name. */
  database?: string
  /** Environment for one case's server; a PGlite case gets a fresh copy of the prepared folder. */
  prepareCase(name: string): Record<string, string>
  /** Rows (transaction id to conversion id) of a sheet, read after the server stopped. */
  rows(caseEnv: Record<string, string>, sheetId: string): Promise<Map<string, string>>
  cleanCase(caseEnv: Record<string, string>): Promise<void>
  close(): Promise<void>
}

const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14)
const SHEET = 'bench'

async function openStore(kind: Store): Promise<StoreHandle> {
  if (kind === 'postgresql') {
    const name = `bench_${stamp}_${process.pid}`
    const admin = new pg.Client({ connectionString: args['pg-url'] })
    await admin.connect()
    await admin.query(`CREATE DATABASE ${name}`)
    const url = new URL(args['pg-url'])
    url.pathname = `/${name}`
    const databaseUrl = url.toString()
    const db = await openDatabase(loadConfig({ DATABASE_URL: databaseUrl }))
    await db.withSession((session) => migrate(session))
    await createSheet(db.prisma, { sheetId: SHEET, currency: 'USD' })
    console.log(`PostgreSQL: created database ${name}`)
    return {
      kind,
      database: name,
      prepareCase: () => ({ DATABASE_URL: databaseUrl }),
      rows: (_env, sheetId) => db.withSession((session) => readRows(session.query.bind(session), sheetId)),
      // Every case starts on an empty table, as the PGlite cases do.
      cleanCase: () => db.withSession((session) => session.exec('TRUNCATE conversions, delivery_counters, delivery_rejections')),
      async close() {
        await db.close()
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
        await admin.end()
        console.log(`PostgreSQL: dropped database ${name}`)
      },
    }
  }
  const base = mkdtempSync(join(tmpdir(), 'postback-bench-'))
  const template = join(base, 'template')
  const db = await openDatabase(loadConfig({ DATA_DIR: template }))
  await db.withSession((session) => migrate(session))
  await createSheet(db.prisma, { sheetId: SHEET, currency: 'USD' })
  await db.close()
  return {
    kind,
    prepareCase(name) {
      const dir = join(base, name)
      cpSync(template, dir, { recursive: true })
      return { DATA_DIR: dir }
    },
    async rows(env, sheetId) {
      const caseDb = await openDatabase(loadConfig({ DATA_DIR: env.DATA_DIR }))
      try {
        return await caseDb.withSession((session) => readRows(session.query.bind(session), sheetId))
      } finally {
        await caseDb.close()
      }
    },
    async cleanCase(env) {
      rmSync(env.DATA_DIR!, { recursive: true, force: true })
    },
    async close() {
      rmSync(base, { recursive: true, force: true })
    },
  }
}

async function readRows(query: (sql: string, params?: unknown[]) => Promise<Array<Record<string, unknown>>>, sheetId: string) {
  const rows = await query('SELECT transaction_id, id::text AS id FROM conversions WHERE sheet_id = $1', [sheetId])
  return new Map(rows.map((row) => [row.transaction_id as string, row.id as string]))
}

/** The server under test as a child process; resolves with its URL. Its log lines go to a file. */
async function startServer(name: string, env: Record<string, string>) {
  const logPath = join(tmpdir(), `postback-bench-${stamp}-${name}.log`)
  const logFd = openSync(logPath, 'w')
  // One folder per case: tsx's loader thread writes a (small) profile of its own beside the main thread's.
  const profile = args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(args['cpu-prof'], name)}`] : []
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', 'bench/server.ts'], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', ...serverEnv, ...env },
    stdio: ['ignore', logFd, logFd, 'ipc'],
  })
  closeSync(logFd)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s; see ${logPath}`)), 60_000)
    child.on('message', (message: { url: string }) => {
      clearTimeout(timer)
      resolve(message.url)
    })
    void exited.then((code) => reject(new Error(`server exited (${code}) before listening; see ${logPath}:\n${readFileSync(logPath, 'utf8').slice(-2000)}`)))
  })
  return {
    url,
    pid: child.pid!,
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      if (code !== 0) throw new Error(`server exited with ${code}; see ${logPath}`)
      if (!process.env.BENCH_KEEP_LOGS) rmSync(logPath, { force: true })
    },
  }
}

/** Samples a process's resident set size (from /proc) every 100 ms. */
function rssSampler(pid: number) {
  const samples: Array<{ at: number; kb: number }> = []
  const read = () => {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
      if (match) samples.push({ at: Date.now(), kb: Number(match[1]) })
    } catch {
      // The process has gone.
    }
  }
  read()
  const timer = setInterval(read, 100)
  return {
    stop() {
      clearInterval(timer)
      read()
      const mb = (list: typeof samples) => Math.round(Math.max(0, ...list.map((s) => s.kb)) / 1024)
      const middle = samples.length ? (samples[0]!.at + samples[samples.length - 1]!.at) / 2 : 0
      return { peak: mb(samples), firstHalf: mb(samples.filter((s) => s.at <= middle)), secondHalf: mb(samples.filter((s) => s.at > middle)) }
    },
  }
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number | 'self'): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/**
 * CPU seconds used by PostgreSQL for the benchmark: the backends connected to its database and the
 * shared background writers (other sessions' backends on the same server are left out).
 */
function postgresCpuSeconds(database: string | undefined): number {
  if (!database) return 0
  let total = 0
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue
      const title = readFileSync(`/proc/${entry}/cmdline`, 'utf8')
      if (title.includes(` ${database} `) || /^postgres: (walwriter|checkpointer|background writer)/.test(title)) total += cpuSeconds(Number(entry))
    } catch {
      // Gone meanwhile.
    }
  }
  return total
}

/** The average batch size from the server's /metrics (postback_batch_size). */
async function averageBatch(url: string): Promise<number | null> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const sum = /^postback_batch_size_sum (\S+)$/m.exec(text)
  const count = /^postback_batch_size_count (\S+)$/m.exec(text)
  return sum && count && Number(count[1]) > 0 ? Math.round((10 * Number(sum[1])) / Number(count[1])) / 10 : null
}

const QUERY_TAIL = '&payout=12.50&currency=USD&campaign_id=120210000000000001&adset_id=120210000000000002&ad_id=120210000000000003'

/**
 * Drives one load phase. Every request is a full postback; with `repeats`, every other request
 * repeats one of the last 1000 transaction ids sent (so some repeats meet their first delivery in
 * the same batch, most an already stored row). Returns autocannon's result and the 200 answers.
 */
async function drive(url: string, path: string, prefix: string, seconds: number, conns: number, repeats: boolean) {
  const recent: string[] = []
  let sent = 0
  const acknowledged: Array<[transactionId: string, body: string]> = []
  const result = await autocannon({
    url,
    connections: conns,
    duration: seconds,
    timeout: 10,
    requests: [
      {
        method: 'GET',
        setupRequest: (request, context) => {
          let transactionId: string
          if (repeats && sent % 2 === 1 && recent.length > 0) {
            transactionId = recent[Math.floor(Math.random() * recent.length)]!
          } else {
            transactionId = `${prefix}-${sent}`
            recent.push(transactionId)
            if (recent.length > 1000) recent.shift()
          }
          sent++
          ;(context as { transactionId?: string }).transactionId = transactionId
          return { ...request, path: `${path}?sheet_id=${SHEET}&transaction_id=${transactionId}${QUERY_TAIL}` }
        },
        onResponse: (status, body, context) => {
          if (status === 200) acknowledged.push([(context as { transactionId: string }).transactionId, body])
        },
      },
    ],
  })
  return { result, acknowledged }
}

async function runCase(store: StoreHandle, route: Route, mix: Mix | 'overload', extraEnv: Record<string, string> = {}): Promise<CaseResult> {
  const name = `${store.kind}-${route}-${mix}`
  const conns = mix === 'overload' ? Number(args['overload-connections']) : connections
  const caseEnv = store.prepareCase(name)
  const loadBefore = loadavg()[0]!
  process.stdout.write(`${name}: ${conns} connections, ${warmup} s warm-up + ${duration} s (load ${loadBefore.toFixed(2)}) ... `)
  const server = await startServer(name, { ...caseEnv, ...extraEnv })
  const repeats = mix === 'half-repeats'
  let warm: Awaited<ReturnType<typeof drive>> | undefined
  if (warmup > 0) warm = await drive(server.url, PATHS[route], `${name}-w`, warmup, conns, repeats)
  const rssMeasured = rssSampler(server.pid)
  const cpuBefore = { server: cpuSeconds(server.pid), loadGenerator: cpuSeconds('self'), postgres: postgresCpuSeconds(store.database), at: Date.now() }
  const { result, acknowledged } = await drive(server.url, PATHS[route], `${name}-m`, duration, conns, repeats)
  const elapsed = (Date.now() - cpuBefore.at) / 1000
  const percent = (after: number, before: number) => Math.round((100 * (after - before)) / elapsed)
  const cpu = {
    server: percent(cpuSeconds(server.pid), cpuBefore.server),
    loadGenerator: percent(cpuSeconds('self'), cpuBefore.loadGenerator),
    postgres: percent(postgresCpuSeconds(store.database), cpuBefore.postgres),
  }
  const memory = rssMeasured.stop()
  const batch = route === 'receiver' ? await averageBatch(server.url) : null
  await server.stop()

  let missing: number | null = null
  let wrongId: number | null = null
  const all = [...(warm?.acknowledged ?? []), ...acknowledged]
  if (route !== 'noop') {
    const rows = await store.rows(caseEnv, SHEET)
    missing = 0
    wrongId = 0
    for (const [transactionId, body] of all) {
      const id = rows.get(transactionId)
      if (id === undefined) missing++
      else if ((JSON.parse(body) as { conversion_id: string }).conversion_id !== id) wrongId++
    }
  }
  await store.cleanCase(caseEnv)
  const statuses = Object.fromEntries(Object.entries(result.statusCodeStats as unknown as Record<string, { count: number }>).map(([code, { count }]) => [code, count]))
  const caseResult: CaseResult = {
    store: store.kind,
    route,
    mix,
    connections: conns,
    requestsPerSecond: Math.round(result.requests.total / result.duration),
    p50: result.latency.p50,
    p99: result.latency.p99,
    peakRssMb: memory.peak,
    rssFirstHalfMb: memory.firstHalf,
    rssSecondHalfMb: memory.secondHalf,
    statuses,
    errors: result.errors,
    timeouts: result.timeouts,
    acknowledged: all.length,
    missing,
    wrongId,
    loadBefore,
    cpu,
    averageBatch: batch,
  }
  console.log(`${caseResult.requestsPerSecond} req/s, p50 ${caseResult.p50} ms, p99 ${caseResult.p99} ms, peak RSS ${caseResult.peakRssMb} MB, CPU % server ${cpu.server} load generator ${cpu.loadGenerator} postgres ${cpu.postgres}${batch === null ? '' : `, batch ${batch}`}${missing === null ? '' : `, ${missing} of ${all.length} acknowledged missing`}`)
  return caseResult
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`
  return [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n')
}

const results: CaseResult[] = []
const started = Date.now()
console.log(`postback-store bench: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node.js ${process.version}, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
console.log(`autocannon in this process, the server under test in a child process; server env: LOG_LEVEL=warn ${Object.entries(serverEnv).map(([k, v]) => `${k}=${v}`).join(' ')}\n`)

for (const kind of stores) {
  const store = await openStore(kind)
  try {
    for (const mix of mixes) for (const route of routes) results.push(await runCase(store, route, mix))
    if (overloadStores.includes(kind)) {
      results.push(await runCase(store, 'receiver', 'overload', { RECEIVER_QUEUE_MAX: args['overload-queue'] }))
    }
  } finally {
    await store.close()
  }
}

const find = (store: Store, route: Route, mix: string) => results.find((r) => r.store === store && r.route === route && r.mix === mix)
const ratio = (a?: number, b?: number) => (a !== undefined && b ? (a / b).toFixed(2) : '-')
const fmtStatuses = (s: Record<string, number>) => Object.entries(s).map(([code, n]) => `${code}:${n}`).join(' ')

console.log(`\n## Results (${duration} s per case after ${warmup} s warm-up, ${connections} connections)\n`)
console.log(
  table([
    ['store', 'mix', 'route', 'req/s', 'p50 ms', 'p99 ms', 'peak RSS MB', 'answers', 'errors', 'timeouts', 'acked', 'missing', 'CPU % server / load gen / pg', 'batch'],
    ...results
      .filter((r) => r.mix !== 'overload')
      .map((r) => [r.store, r.mix, r.route, String(r.requestsPerSecond), String(r.p50), String(r.p99), String(r.peakRssMb), fmtStatuses(r.statuses), String(r.errors), String(r.timeouts), String(r.acknowledged), r.missing === null ? '-' : String(r.missing + (r.wrongId ?? 0)), `${r.cpu.server} / ${r.cpu.loadGenerator} / ${r.cpu.postgres}`, r.averageBatch === null ? '-' : String(r.averageBatch)]),
  ]),
)

console.log('\n## Ratios\n')
const ratioRows: string[][] = [['store', 'mix', 'receiver / no-db', 'receiver / naive', 'receiver p99 ms', 'acked missing', 'targets (PostgreSQL: >= 0.5, >= 8, < 50 ms, 0)']]
for (const kind of stores) {
  for (const mix of mixes) {
    const receiver = find(kind, 'receiver', mix)
    const noop = find(kind, 'noop', mix)
    const naive = find(kind, 'naive', mix)
    if (!receiver) continue
    const lost = (receiver.missing ?? 0) + (receiver.wrongId ?? 0) + (naive ? (naive.missing ?? 0) + (naive.wrongId ?? 0) : 0)
    const met =
      kind === 'postgresql'
        ? [
            noop ? receiver.requestsPerSecond >= 0.5 * noop.requestsPerSecond : undefined,
            naive ? receiver.requestsPerSecond >= 8 * naive.requestsPerSecond : undefined,
            receiver.p99 < 50,
            lost === 0,
          ]
            .map((ok) => (ok === undefined ? '-' : ok ? 'met' : 'MISSED'))
            .join(', ')
        : '(no targets)'
    ratioRows.push([kind, mix, ratio(receiver.requestsPerSecond, noop?.requestsPerSecond), ratio(receiver.requestsPerSecond, naive?.requestsPerSecond), String(receiver.p99), String(lost), met])
  }
}
console.log(table(ratioRows))

const overloads = results.filter((r) => r.mix === 'overload')
if (overloads.length) {
  console.log(`\n## Overload (RECEIVER_QUEUE_MAX=${args['overload-queue']}, ${args['overload-connections']} connections, ${duration} s)\n`)
  console.log(
    table([
      ['store', 'req/s', '2xx', '503', 'other status', 'errors', 'timeouts', 'peak RSS MB', 'RSS 1st half / 2nd half MB', 'acked missing', 'verdict'],
      ...overloads.map((r) => {
        const ok = Object.entries(r.statuses).filter(([code]) => code.startsWith('2')).reduce((n, [, c]) => n + c, 0)
        const unavailable = r.statuses['503'] ?? 0
        const other = Object.entries(r.statuses).filter(([code]) => !code.startsWith('2') && code !== '503').reduce((n, [, c]) => n + c, 0)
        const lost = (r.missing ?? 0) + (r.wrongId ?? 0)
        const good = other === 0 && r.errors === 0 && r.timeouts === 0 && lost === 0
        return [r.store, String(r.requestsPerSecond), String(ok), String(unavailable), String(other), String(r.errors), String(r.timeouts), String(r.peakRssMb), `${r.rssFirstHalfMb} / ${r.rssSecondHalfMb}`, String(lost), good ? 'ok' : 'FAILED']
      }),
    ]),
  )
}
console.log(`\nTotal bench time ${Math.round((Date.now() - started) / 1000)} s.`)
if (args.json) {
  writeFileSync(args.json, `${JSON.stringify({ machine: { cores: cpus().length, model: cpus()[0]?.model, node: process.version }, duration, warmup, connections, serverEnv, results }, null, 2)}\n`)
}
