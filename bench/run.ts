// `npm run bench`: the receiver against its baselines, in one run, with one load generator.
// For each store (a fresh PostgreSQL database, fresh PGlite folders) and each request mix (unique
// transaction ids; half of them repeats; a tenth of them status updates), it starts five servers
// (bench/server.ts, each a child process): load goes to (a) GET /bench/noop, no database work,
// (b) the floor (bench/floor.ts), the least a correct group-commit receiver of this design does,
// (c) the bare floor, the same without lifecycle moves (issue 15's first floor), (d) the naive
// receiver, one Prisma write per request, (e) the real receiver, from autocannon in this process.
// The measured time is cut into rounds that take turns between them, so that a change in the
// machine's load (other work on it) falls on all alike and the ratios stay fair.
// It prints requests/s, p50/p99 of the 2xx answers, each server's peak RSS, CPU use (and CPU per
// delivery), the ratios against the floor and the no-database route, and then checks that every
// delivery answered 200 is in the database with the id it was answered with, counting the answers'
// outcomes (stored, updated, duplicate). Last, an overload case: far more connections than the
// queue admits; every answer must be a 2xx or a 503 and memory must stay bounded.
// Options: `npm run bench -- --help`.
import { spawn } from 'node:child_process'
import { closeSync, cpSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve as resolvePath } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { NAIVE_RECEIVER_PATH } from './naive-receiver.ts'
import { NOOP_PATH } from './noop-route.ts'
import { FLOOR_PATH } from './floor.ts'
import { adminQuery as runAdminQuery, BENCH_SERVER_ENV, cpuSeconds, FLOOR_MODES, envPairs, postgresCpuSeconds, prepareBenchStore, rowsOption, settle, spreadId, postgresCpuUsed, table } from './support.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const RECEIVER_PATH = '/meta/postback/conversion'

const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    stores: { type: 'string', default: 'postgresql,pglite' },
    mixes: { type: 'string', default: 'unique,half-repeats,updates' },
    routes: { type: 'string', default: 'noop,floor,bare-floor,receiver,naive' },
    overload: { type: 'string', default: 'postgresql,pglite' },
    'overload-connections': { type: 'string', default: '1000' },
    'overload-queue': { type: 'string', default: '200' },
    'overload-duration': { type: 'string', default: '20' },
    backlog: { type: 'string' },
    'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' },
    env: { type: 'string', multiple: true, default: [] },
    variant: { type: 'string', multiple: true, default: [] },
    tree: { type: 'string', multiple: true, default: [] },
    'cpu-prof': { type: 'string' },
    json: { type: 'string' },
    rows: { type: 'string', default: '0' },
    'keep-logs': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})

if (args.help) {
  console.log(`npm run bench -- [options]
  --duration S               measured seconds per route and mix (10), cut into --rounds
  --rounds N                 turns the routes take (4): round 1 runs noop, floor, bare-floor, receiver, naive; round 2 floor, bare-floor, ...
  --warmup S                 unmeasured seconds per server before the rounds (2)
  --connections N            concurrent connections (50)
  --stores LIST              postgresql,pglite
  --mixes LIST               unique,half-repeats,updates (updates: base deliveries status=lead, every tenth request
                             re-sends one of the last 1000 ids with status=sale or status=chargeback)
  --routes LIST              noop,floor,bare-floor,receiver,naive (bare-floor: the floor without lifecycle moves)
  --overload LIST            stores to run the overload case on (postgresql,pglite; '' for none)
  --overload-connections N   (1000)
  --overload-queue N         RECEIVER_QUEUE_MAX in the overload case (200)
  --overload-duration S      (20)
  --backlog N                the servers' listen backlog (default: 4 times the most connections of any case,
                             at least Node's 511), so that opening all connections at once does not overflow it
  --pg-url URL               PostgreSQL to create (and drop) the benchmark's own database through
  --env NAME=VALUE           environment for the receiver's server (repeatable), e.g. RECEIVER_BATCH_MAX=100
  --variant LABEL:N=V,N=V    one more receiver, route "receiver:LABEL", with this environment on top,
                             measured in the same rounds (repeatable): compares settings in one run
  --tree LABEL:PATH          one more receiver, route "receiver:LABEL", run from another checkout of this
                             repository at PATH (a git worktree of an earlier commit, with node_modules and
                             src/generated; the same migrations), measured in the same rounds: compares code
  --cpu-prof DIR             write V8 CPU profiles of the servers into DIR (one folder per server)
  --json FILE                also write the results as JSON
  --rows N                   conversions the bench's sheet already holds when each mix starts (0): 300 ads over the
                             90 days before now, folded into the rollups, vacuumed and checkpointed (bench/support.ts,
                             fillConversions): a table in autovacuum's best state; only what the servers write is removed
                             between mixes (the rollups keep what they folded of it); new ids are spread over the index
  --keep-logs                keep the servers' log files`)
  process.exit(0)
}

type Store = 'postgresql' | 'pglite'
/** noop, floor, bare-floor, naive, receiver, or receiver:LABEL for a --variant or --tree. */
type Route = string
type Mix = 'unique' | 'half-repeats' | 'updates'

const list = (text: string) => text.split(',').map((s) => s.trim()).filter(Boolean)
const duration = Number(args.duration)
const rounds = Math.max(1, Number(args.rounds))
const warmup = Number(args.warmup)
const connections = Number(args.connections)
const filledRows = rowsOption(args.rows)
const stores = list(args.stores) as Store[]
const mixes = list(args.mixes) as Mix[]
/** `--variant` and `--tree` specs, LABEL:REST, as the route `receiver:LABEL`; a label once only. */
const labelled = new Set<Route>()
function receiverSpec(option: string, spec: string): [Route, string] {
  const colon = spec.indexOf(':')
  const route = `receiver:${spec.slice(0, colon)}` as Route
  if (colon < 1 || labelled.has(route)) {
    console.error(`--${option} ${spec}: give LABEL:... with a label of its own`)
    process.exit(2)
  }
  labelled.add(route)
  return [route, spec.slice(colon + 1)]
}
const variants = new Map(
  args.variant.map((spec) => {
    const [route, rest] = receiverSpec('variant', spec)
    return [route, envPairs(list(rest))] as const
  }),
)
// Another checkout's receiver: its code, this run's settings and rounds.
const trees = new Map(
  args.tree.map((spec) => {
    const [route, path] = receiverSpec('tree', spec)
    return [route, resolvePath(path)] as const
  }),
)
const routes = [...list(args.routes), ...variants.keys(), ...trees.keys()]
const overloadStores = list(args.overload) as Store[]
const receiverEnv = envPairs(args.env)
const isFloor = (route: Route) => Object.hasOwn(FLOOR_MODES, route)
const pathOf = (route: Route) => (route === 'noop' ? NOOP_PATH : route === 'naive' ? NAIVE_RECEIVER_PATH : isFloor(route) ? FLOOR_PATH : RECEIVER_PATH)
const isReceiver = (route: Route) => route === 'receiver' || route.startsWith('receiver:')
const SHEET = 'bench'
// Room for every connection of a case and its reconnections (the kernel caps it at net.core.somaxconn).
const backlog = Number(args.backlog ?? Math.max(511, 4 * connections, overloadStores.length ? 4 * Number(args['overload-connections']) : 0))
const stamp = new Date().toISOString().replace(/\D/g, '').slice(0, 14)

interface CaseResult {
  store: Store
  route: Route
  mix: Mix | 'overload'
  connections: number
  seconds: number
  requestsPerSecond: number
  /** Latency of the 2xx answers, ms. */
  p50: number
  p99: number
  peakRssMb: number
  /** Peak RSS in each quarter of the measured time: flat when memory is bounded. */
  rssQuartersMb: number[]
  statuses: Record<string, number>
  errors: number
  timeouts: number
  acknowledged: number
  /** Acknowledged deliveries not in the database, or there with another id; null for the no-database route. */
  missing: number | null
  /**
   * CPU used while measured, in % of one core: the server, this load generator, PostgreSQL's backends
   * for this database, and PostgreSQL's shared WAL writer, checkpointer and background writer.
   */
  cpu: { server: number; loadGenerator: number; postgres: number; postgresShared: number }
  /** CPU ms per 1000 answers while measured, of the server and of PostgreSQL's backends (on PGlite, inside the server), and of PostgreSQL's shared processes. */
  cpuPerThousand: { server: number; postgres: number; postgresShared: number }
  /** The outcomes of the 200 answers (warm-up included), from their bodies; null for the no-database route. */
  outcomes: { stored: number; updated: number; duplicate: number } | null
  /** Connections the kernel dropped from a full listen queue while measured (TcpExt ListenOverflows, machine-wide). */
  listenOverflows: number
  /** Deliveries per batch statement (postback_batch_size), warm-up included. */
  averageBatch: number | null
  loadAverage: number
}

/** One store under test: how a server reaches it, and a way to read it back after the server stopped. */
interface StoreHandle {
  kind: Store
  /** The PostgreSQL database's name. */
  database?: string
  /** Environment for one server; on PGlite, a fresh copy of the prepared folder. */
  prepare(name: string): Record<string, string>
  /** Rows (transaction id to conversion id) of the bench sheet, read after the server stopped. */
  rows(env: Record<string, string>): Promise<Map<string, string>>
  clean(env: Record<string, string>): Promise<void>
  close(): Promise<void>
}

async function openStore(kind: Store): Promise<StoreHandle> {
  if (kind === 'postgresql') {
    const name = `bench_${stamp}_${process.pid}`
    await adminQuery(`CREATE DATABASE ${name}`)
    const url = new URL(args['pg-url'])
    url.pathname = `/${name}`
    const databaseUrl = url.toString()
    const db = await openDatabase(loadConfig({ DATABASE_URL: databaseUrl }))
    console.log(`PostgreSQL: created database ${name}`)
    const lastFilled = await prepareBenchStore(db, SHEET, filledRows, progress('PostgreSQL'))
    return {
      kind,
      database: name,
      prepare: () => ({ DATABASE_URL: databaseUrl }),
      rows: () => db.withSession((session) => readRows(session.query.bind(session), lastFilled)),
      // Each mix starts on the table as filled (empty without --rows), as on PGlite.
      clean: () =>
        db.withSession(async (session) => {
          if (filledRows === 0) return session.exec('TRUNCATE conversions, conversion_history, delivery_counters, delivery_rejections')
          await session.query('DELETE FROM conversion_history WHERE conversion_id > $1::bigint', [lastFilled])
          await session.query('DELETE FROM conversions WHERE id > $1::bigint', [lastFilled])
          await session.exec('TRUNCATE delivery_counters, delivery_rejections')
          await settle(session, 'conversions, conversion_history')
        }),
      async close() {
        await db.close().catch(() => undefined)
        // A new connection: the server may have restarted meanwhile.
        await adminQuery(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
        console.log(`PostgreSQL: dropped database ${name}`)
      },
    }
  }
  const base = mkdtempSync(join(tmpdir(), 'postback-bench-'))
  const template = join(base, 'template')
  const db = await openDatabase(loadConfig({ DATA_DIR: template }))
  const lastFilled = await prepareBenchStore(db, SHEET, filledRows, progress('PGlite')).finally(() => db.close())
  return {
    kind,
    prepare(name) {
      const dir = join(base, name)
      cpSync(template, dir, { recursive: true })
      return { DATA_DIR: dir }
    },
    async rows(env) {
      const db = await openDatabase(loadConfig({ DATA_DIR: env.DATA_DIR }))
      try {
        return await db.withSession((session) => readRows(session.query.bind(session), lastFilled))
      } finally {
        await db.close()
      }
    },
    async clean(env) {
      rmSync(env.DATA_DIR!, { recursive: true, force: true })
    },
    async close() {
      rmSync(base, { recursive: true, force: true })
    },
  }
}

const adminQuery = (sql: string) => runAdminQuery(args['pg-url'], sql)

/** The --rows fill's progress lines of a store. */
const progress = (store: string) => (message: string) => console.log(`${store}: ${message}`)

/** The bench sheet's rows written by the servers (those after the fill's last). */
async function readRows(query: (sql: string, params?: unknown[]) => Promise<Array<Record<string, unknown>>>, lastFilled: string) {
  const rows = await query('SELECT transaction_id, id::text AS id FROM conversions WHERE sheet_id = $1 AND id > $2::bigint', [SHEET, lastFilled])
  return new Map(rows.map((row) => [row.transaction_id as string, row.id as string]))
}

interface Server {
  name: string
  url: string
  pid: number
  env: Record<string, string>
  stop(): Promise<void>
}

/** A server under test as a child process (the app, or the floor of a floor route); resolves once it listens. Its log lines go to a file. */
async function startServer(name: string, env: Record<string, string>, route: Route, cwd = ROOT): Promise<Server> {
  const logPath = join(tmpdir(), `postback-bench-${stamp}-${name}.log`)
  const logFd = openSync(logPath, 'w')
  // One folder per server: tsx's loader thread writes a (small) profile of its own beside the main thread's.
  const profile = args['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${join(args['cpu-prof'], name)}`] : []
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', 'bench/server.ts', String(backlog), ...(FLOOR_MODES[route] ?? [])], {
    cwd,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...BENCH_SERVER_ENV, ...env },
    stdio: ['ignore', logFd, logFd, 'ipc'],
  })
  closeSync(logFd)
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no answer in 60 s; see ${logPath}`)), 60_000)
    child.on('message', (message: { url: string }) => {
      clearTimeout(timer)
      resolve(message.url)
    })
    void exited.then((code) => reject(new Error(`${name} exited (${code}) before listening:\n${readFileSync(logPath, 'utf8').slice(-2000)}`)))
  })
  return {
    name,
    url,
    pid: child.pid!,
    env,
    async stop() {
      child.kill('SIGTERM')
      const code = await exited
      if (code !== 0) throw new Error(`${name} exited with ${code}; see ${logPath}`)
      if (!args['keep-logs']) rmSync(logPath, { force: true })
    },
  }
}

function listenOverflows(): number {
  const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'))
  const names = lines[0]?.split(' ') ?? []
  const values = lines[1]?.split(' ') ?? []
  return Number(values[names.indexOf('ListenOverflows')] ?? 0)
}

function rssKb(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0)
  } catch {
    return 0
  }
}

/** The average batch size from the server's /metrics (postback_batch_size). */
async function averageBatch(url: string): Promise<number | null> {
  const text = await (await fetch(`${url}/metrics`)).text()
  const sum = /^postback_batch_size_sum (\S+)$/m.exec(text)
  const count = /^postback_batch_size_count (\S+)$/m.exec(text)
  return sum && count && Number(count[1]) > 0 ? Math.round((10 * Number(sum[1])) / Number(count[1])) / 10 : null
}

/** What the load generator saw of one route, added up over its slices. */
class Tally {
  seconds = 0
  requests = 0
  errors = 0
  timeouts = 0
  statuses: Record<string, number> = {}
  latencies: number[] = []
  acknowledged: Array<[transactionId: string, body: string]> = []
  rss: Array<{ at: number; kb: number }> = []
  cpu = { server: 0, loadGenerator: 0, postgres: 0, postgresShared: 0 }
  listenOverflows = 0
  // Ids sent lately, for the repeats and updates of the mixes; kept across slices.
  recent: string[] = []
  sent = 0

  percentile(p: number): number {
    if (this.latencies.length === 0) return 0
    const sorted = Float64Array.from(this.latencies).sort()
    return Math.round(10 * sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!) / 10
  }
}

const QUERY_TAIL = '&payout=12.50&currency=USD&campaign_id=120210000000000001&adset_id=120210000000000002&ad_id=120210000000000003'

// The updates mix: first deliveries are leads (pending); an update says sale (approved) or
// chargeback (rejected). Allowed moves: lead to sale or chargeback, sale to chargeback; a second
// update of a key may be refused (duplicate), as in a network's own retries and reversals.
const UPDATE_WORDS = ['sale', 'chargeback'] as const

/** The transaction id and status word of the next request of a mix. */
function nextDelivery(tally: Tally, mix: Mix, prefix: string): { transactionId: string; status?: string } {
  const n = tally.sent++
  const earlier = () => tally.recent[Math.floor(Math.random() * tally.recent.length)]!
  if (mix === 'half-repeats' && n % 2 === 1 && tally.recent.length > 0) return { transactionId: earlier() }
  if (mix === 'updates' && n % 10 === 9 && tally.recent.length > 0) return { transactionId: earlier(), status: UPDATE_WORDS[Math.floor(Math.random() * 2)]! }
  const transactionId = spreadId(prefix, n)
  tally.recent.push(transactionId)
  if (tally.recent.length > 1000) tally.recent.shift()
  return mix === 'updates' ? { transactionId, status: 'lead' } : { transactionId }
}

/**
 * Drives one slice of load at a server. Every request is a full postback. Mix half-repeats: every
 * other request repeats one of the last 1000 transaction ids sent (some meet their first delivery
 * in the same batch, most an already stored row). Mix updates: first deliveries with status=lead,
 * and every tenth request re-sends one of the last 1000 ids with status=sale or status=chargeback.
 * With `measure`, the slice is added to `tally` (only the 200 answers are recorded otherwise, to be
 * checked in the database too).
 */
function drive(server: Server, route: Route, tally: Tally, options: { seconds: number; connections: number; mix: Mix; measure: boolean; database?: string }) {
  const prefix = `${server.name}-${options.measure ? 'm' : 'w'}`
  const before = { server: cpuSeconds(server.pid), loadGenerator: cpuSeconds('self'), postgres: postgresCpuSeconds(options.database), overflows: listenOverflows() }
  const sampler = options.measure ? setInterval(() => tally.rss.push({ at: Date.now(), kb: rssKb(server.pid) }), 100) : undefined
  return new Promise<void>((resolve, reject) => {
    const instance = autocannon(
      {
        url: server.url,
        connections: options.connections,
        duration: options.seconds,
        timeout: 10,
        requests: [
          {
            method: 'GET',
            setupRequest: (request, context) => {
              const { transactionId, status } = nextDelivery(tally, options.mix, prefix)
              ;(context as { transactionId?: string }).transactionId = transactionId
              const statusParameter = status ? `&status=${status}` : ''
              return { ...request, path: `${pathOf(route)}?sheet_id=${SHEET}&transaction_id=${transactionId}${statusParameter}${QUERY_TAIL}` }
            },
            onResponse: (status, body, context) => {
              if (status === 200) tally.acknowledged.push([(context as { transactionId: string }).transactionId, body])
            },
          },
        ],
      },
      (error, result) => {
        clearInterval(sampler)
        if (error) return reject(error)
        if (options.measure) {
          tally.seconds += result.duration
          tally.requests += result.requests.total
          tally.errors += result.errors
          tally.timeouts += result.timeouts
          tally.cpu.server += cpuSeconds(server.pid) - before.server
          tally.cpu.loadGenerator += cpuSeconds('self') - before.loadGenerator
          const postgres = postgresCpuUsed(before.postgres, postgresCpuSeconds(options.database))
          tally.cpu.postgres += postgres.backends
          tally.cpu.postgresShared += postgres.shared
          tally.listenOverflows += listenOverflows() - before.overflows
        }
        resolve()
      },
    )
    if (options.measure) {
      instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
        tally.statuses[statusCode] = (tally.statuses[statusCode] ?? 0) + 1
        if (statusCode >= 200 && statusCode < 300) tally.latencies.push(responseTime)
      })
    }
  })
}

/** Acknowledged deliveries not in the database with the id they were answered with, and the answers' outcomes. */
async function verify(store: StoreHandle, server: Server, tally: Tally): Promise<{ missing: number; outcomes: NonNullable<CaseResult['outcomes']> }> {
  const rows = await store.rows(server.env)
  let missing = 0
  const outcomes = { stored: 0, updated: 0, duplicate: 0 }
  for (const [transactionId, body] of tally.acknowledged) {
    const answer = JSON.parse(body) as { status: keyof typeof outcomes; conversion_id: string }
    if (rows.get(transactionId) !== answer.conversion_id) missing++
    outcomes[answer.status]++
  }
  return { missing, outcomes }
}

function summarize(store: Store, route: Route, mix: CaseResult['mix'], conns: number, tally: Tally, check: Awaited<ReturnType<typeof verify>> | null, batch: number | null, load: number): CaseResult {
  const mb = (samples: Tally['rss']) => Math.round(Math.max(0, ...samples.map((s) => s.kb)) / 1024)
  const first = tally.rss[0]?.at ?? 0
  const span = (tally.rss[tally.rss.length - 1]?.at ?? 0) - first
  const quarter = (q: number) => tally.rss.filter((s) => s.at - first >= (q * span) / 4 && s.at - first <= ((q + 1) * span) / 4)
  const percent = (cpuSeconds: number) => Math.round((100 * cpuSeconds) / tally.seconds)
  const perThousand = (cpuSeconds: number) => Math.round((10 * 1e6 * cpuSeconds) / Math.max(1, tally.requests)) / 10
  return {
    store,
    route,
    mix,
    connections: conns,
    seconds: Math.round(tally.seconds * 10) / 10,
    requestsPerSecond: Math.round(tally.requests / tally.seconds),
    p50: tally.percentile(0.5),
    p99: tally.percentile(0.99),
    peakRssMb: mb(tally.rss),
    rssQuartersMb: [0, 1, 2, 3].map((q) => mb(quarter(q))),
    statuses: tally.statuses,
    errors: tally.errors,
    timeouts: tally.timeouts,
    acknowledged: tally.acknowledged.length,
    missing: check?.missing ?? null,
    cpu: { server: percent(tally.cpu.server), loadGenerator: percent(tally.cpu.loadGenerator), postgres: percent(tally.cpu.postgres), postgresShared: percent(tally.cpu.postgresShared) },
    cpuPerThousand: { server: perThousand(tally.cpu.server), postgres: perThousand(tally.cpu.postgres), postgresShared: perThousand(tally.cpu.postgresShared) },
    outcomes: check?.outcomes ?? null,
    listenOverflows: tally.listenOverflows,
    averageBatch: batch,
    loadAverage: load,
  }
}

function report(result: CaseResult): void {
  const batch = result.averageBatch === null ? '' : `, batch ${result.averageBatch}`
  const check = result.missing === null ? '' : `, ${result.missing} of ${result.acknowledged} acknowledged missing`
  const outcomes = result.outcomes ? ` (${outcomeText(result.outcomes)})` : ''
  console.log(
    `  ${result.route.padEnd(16)} ${String(result.requestsPerSecond).padStart(6)} req/s, p50 ${result.p50} ms, p99 ${result.p99} ms, peak RSS ${result.peakRssMb} MB, ` +
      `CPU % server ${result.cpu.server} / load generator ${result.cpu.loadGenerator} / postgres ${result.cpu.postgres} (+ shared ${result.cpu.postgresShared}), ` +
      `CPU ms per 1000 server + pg ${cpuText(result)} (+ pg shared ${result.cpuPerThousand.postgresShared})${batch}${check}${outcomes}`,
  )
}

const outcomeText = (o: NonNullable<CaseResult['outcomes']>) => `${o.stored} stored / ${o.updated} updated / ${o.duplicate} duplicate`
const cpuText = (r: CaseResult) => `${r.cpuPerThousand.server} + ${r.cpuPerThousand.postgres} = ${Math.round(10 * (r.cpuPerThousand.server + r.cpuPerThousand.postgres)) / 10}`

/** CPU ms per 1000 answers while measured, of the server and PostgreSQL's backends together (the shared processes left out: other work on the machine shows in them). */
function cpuPerThousand(r: CaseResult): number {
  return r.cpuPerThousand.server + r.cpuPerThousand.postgres
}

/** The routes of one store and mix, measured in turns. */
async function runMix(store: StoreHandle, mix: Mix): Promise<CaseResult[]> {
  const load = loadavg()[0]!
  console.log(`${store.kind}, ${mix}: ${routes.join(', ')}; ${connections} connections, ${warmup} s warm-up each, then ${rounds} rounds of ${(duration / rounds).toFixed(1)} s each (load ${load.toFixed(2)})`)
  const servers = new Map<Route, Server>()
  const tallies = new Map<Route, Tally>()
  try {
    for (const route of routes) {
      const name = `${store.kind}-${mix}-${route.replace(':', '-')}`
      const env = isReceiver(route) ? { ...receiverEnv, ...variants.get(route) } : {}
      servers.set(route, await startServer(name, { ...store.prepare(name), ...env }, route, trees.get(route)))
      tallies.set(route, new Tally())
    }
    for (const route of routes) {
      if (warmup > 0) await drive(servers.get(route)!, route, tallies.get(route)!, { seconds: warmup, connections, mix, measure: false })
    }
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < routes.length; i++) {
        const route = routes[(i + round) % routes.length]!
        await drive(servers.get(route)!, route, tallies.get(route)!, { seconds: duration / rounds, connections, mix, measure: true, database: store.database })
      }
    }
    const batches = new Map<Route, number | null>()
    for (const route of routes.filter((r) => isReceiver(r) || isFloor(r))) batches.set(route, await averageBatch(servers.get(route)!.url))
    const stopped = [...servers.entries()]
    for (const [route, server] of stopped) {
      await server.stop()
      servers.delete(route)
    }
    const results: CaseResult[] = []
    for (const [route, server] of stopped) {
      const tally = tallies.get(route)!
      const check = route === 'noop' ? null : await verify(store, server, tally)
      const result = summarize(store.kind, route, mix, connections, tally, check, batches.get(route) ?? null, load)
      report(result)
      results.push(result)
    }
    for (const [, server] of stopped) await store.clean(server.env)
    return results
  } finally {
    for (const server of servers.values()) await server.stop().catch(() => undefined)
  }
}

async function runOverload(store: StoreHandle): Promise<CaseResult> {
  const load = loadavg()[0]!
  const conns = Number(args['overload-connections'])
  const seconds = Number(args['overload-duration'])
  console.log(`${store.kind}, overload: receiver with RECEIVER_QUEUE_MAX=${args['overload-queue']}, ${conns} connections, ${seconds} s (load ${load.toFixed(2)})`)
  const name = `${store.kind}-overload-receiver`
  const server = await startServer(name, { ...store.prepare(name), ...receiverEnv, RECEIVER_QUEUE_MAX: args['overload-queue'] }, 'receiver')
  const tally = new Tally()
  try {
    await drive(server, 'receiver', tally, { seconds, connections: conns, mix: 'unique', measure: true, database: store.database })
    const batch = await averageBatch(server.url)
    await server.stop()
    const check = await verify(store, server, tally)
    await store.clean(server.env)
    const result = summarize(store.kind, 'receiver', 'overload', conns, tally, check, batch, load)
    report(result)
    return result
  } catch (error) {
    await server.stop().catch(() => undefined)
    throw error
  }
}

const results: CaseResult[] = []
const started = Date.now()
console.log(`postback-store bench: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), Node.js ${process.version}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`)
console.log(`autocannon in this process; each server under test in its own child process, the app's servers at LOG_LEVEL=${process.env.LOG_LEVEL ?? 'info (the default), their lines to a file'}; receiver env: ${Object.entries(receiverEnv).map(([k, v]) => `${k}=${v}`).join(' ') || 'defaults'}; the bench's sheet holds ${filledRows} conversions when each mix starts\n`)

// Interrupted: drop the database and folders made so far (the servers stop when this process goes).
const open = new Set<StoreHandle>()
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: cleaning up`)
    void Promise.allSettled([...open].map((store) => store.close())).then(() => process.exit(130))
  })
}

for (const kind of stores) {
  const store = await openStore(kind)
  open.add(store)
  try {
    for (const mix of mixes) results.push(...(await runMix(store, mix)))
    if (overloadStores.includes(kind)) results.push(await runOverload(store))
  } finally {
    open.delete(store)
    await store.close()
  }
}

const find = (store: Store, route: Route, mix: string) => results.find((r) => r.store === store && r.route === route && r.mix === mix)
const ratio = (a?: number, b?: number) => (a !== undefined && b ? (a / b).toFixed(2) : '-')
const statusText = (s: Record<string, number>) => Object.entries(s).map(([code, n]) => `${code}: ${n}`).join(', ')

console.log(`\n## Results: ${duration} s per route and mix (${rounds} rounds), ${connections} connections\n`)
console.log(
  table([
    ['store', 'mix', 'route', 'req/s', 'p50 ms', 'p99 ms', 'peak RSS MB', 'answers', 'errors', 'timeouts', 'acked', 'missing', 'stored / updated / duplicate', 'CPU % server / load gen / pg (+ shared)', 'CPU ms per 1000 server + pg (+ shared)', 'batch'],
    ...results
      .filter((r) => r.mix !== 'overload')
      .map((r) => [
        r.store,
        r.mix,
        r.route,
        String(r.requestsPerSecond),
        String(r.p50),
        String(r.p99),
        String(r.peakRssMb),
        statusText(r.statuses),
        String(r.errors),
        String(r.timeouts),
        String(r.acknowledged),
        r.missing === null ? '-' : String(r.missing),
        r.outcomes ? `${r.outcomes.stored} / ${r.outcomes.updated} / ${r.outcomes.duplicate}` : '-',
        `${r.cpu.server} / ${r.cpu.loadGenerator} / ${r.cpu.postgres} (+ ${r.cpu.postgresShared})`,
        `${cpuText(r)} (+ ${r.cpuPerThousand.postgresShared})`,
        r.averageBatch === null ? '-' : String(r.averageBatch),
      ]),
  ]),
)

// Every route against the floor: requests/s and CPU per delivery (server and PostgreSQL's backends)
// as multiples of the floor's. The bare floor and the naive receiver make no lifecycle moves: in the
// updates mix they answer a status update `duplicate` where the receiver and the floor move the
// conversion.
console.log('\n## Against the floor\n')
const floorRows: string[][] = [['store', 'mix', 'route', 'req/s', 'req/s ÷ floor', 'CPU ms per 1000 (server + pg backends)', 'CPU ÷ floor', 'p99 ms', 'missing', 'stored / updated / duplicate', 'load']]
for (const kind of stores) {
  for (const mix of mixes) {
    const floor = find(kind, 'floor', mix)
    for (const route of routes) {
      const r = find(kind, route, mix)
      if (!r) continue
      floorRows.push([
        kind,
        mix,
        route,
        String(r.requestsPerSecond),
        ratio(r.requestsPerSecond, floor?.requestsPerSecond),
        String(Math.round(10 * cpuPerThousand(r)) / 10),
        floor ? ratio(cpuPerThousand(r), cpuPerThousand(floor)) : '-',
        String(r.p99),
        r.missing === null ? '-' : String(r.missing),
        r.outcomes ? `${r.outcomes.stored} / ${r.outcomes.updated} / ${r.outcomes.duplicate}` : '-',
        r.loadAverage.toFixed(1),
      ])
    }
  }
}
console.log(table(floorRows))

console.log('\n## Ratios\n')
const ratioRows: string[][] = [['store', 'mix', 'receiver / floor', 'receiver / bare floor', 'receiver / no-db', 'receiver / naive', 'receiver p99 ms', 'acked missing', 'targets on PostgreSQL: >= 0.5, >= 8, p99 < 50 ms, 0 missing']]
for (const kind of stores) {
  for (const mix of mixes) {
    for (const route of routes.filter(isReceiver)) {
      const receiver = find(kind, route, mix)
      const noop = find(kind, 'noop', mix)
      const naive = find(kind, 'naive', mix)
      const floor = find(kind, 'floor', mix)
      const bareFloor = find(kind, 'bare-floor', mix)
      if (!receiver) continue
      const lost = (receiver.missing ?? 0) + (naive?.missing ?? 0) + (floor?.missing ?? 0) + (bareFloor?.missing ?? 0)
      const verdicts =
      kind === 'postgresql'
        ? [
            noop ? receiver.requestsPerSecond >= 0.5 * noop.requestsPerSecond : undefined,
            naive ? receiver.requestsPerSecond >= 8 * naive.requestsPerSecond : undefined,
            receiver.p99 < 50,
            lost === 0,
          ]
            .map((ok) => (ok === undefined ? '-' : ok ? 'met' : 'MISSED'))
            .join(', ')
        : '(none on PGlite)'
      ratioRows.push([kind, route === 'receiver' ? mix : `${mix} ${route}`, ratio(receiver.requestsPerSecond, floor?.requestsPerSecond), ratio(receiver.requestsPerSecond, bareFloor?.requestsPerSecond), ratio(receiver.requestsPerSecond, noop?.requestsPerSecond), ratio(receiver.requestsPerSecond, naive?.requestsPerSecond), String(receiver.p99), String(lost), verdicts])
    }
  }
}
console.log(table(ratioRows))

const overloads = results.filter((r) => r.mix === 'overload')
if (overloads.length) {
  console.log(`\n## Overload: RECEIVER_QUEUE_MAX=${args['overload-queue']}, ${args['overload-connections']} connections, ${args['overload-duration']} s, listen backlog ${backlog}\n`)
  console.log(
    table([
      ['store', 'answers/s', '2xx', '503', 'other', 'errors', 'timeouts', 'listen overflows', 'p99 2xx ms', 'peak RSS MB', 'peak RSS by quarter MB', 'acked missing', 'verdict'],
      ...overloads.map((r) => {
        const count = (match: (code: string) => boolean) => Object.entries(r.statuses).filter(([code]) => match(code)).reduce((n, [, c]) => n + c, 0)
        const ok = count((code) => code.startsWith('2'))
        const unavailable = count((code) => code === '503')
        const other = count((code) => !code.startsWith('2') && code !== '503')
        const good = other === 0 && r.errors === 0 && r.timeouts === 0 && r.missing === 0
        return [r.store, String(r.requestsPerSecond), String(ok), String(unavailable), String(other), String(r.errors), String(r.timeouts), String(r.listenOverflows), String(r.p99), String(r.peakRssMb), r.rssQuartersMb.join(' / '), String(r.missing), good ? 'ok' : 'FAILED']
      }),
    ]),
  )
}
console.log(`\nTotal bench time ${Math.round((Date.now() - started) / 1000)} s; load average now ${loadavg().map((l) => l.toFixed(2)).join(' ')}.`)
if (args.json) {
  writeFileSync(args.json, `${JSON.stringify({ machine: { cores: cpus().length, model: cpus()[0]?.model, node: process.version }, duration, rounds, warmup, connections, receiverEnv, results }, null, 2)}\n`)
}
