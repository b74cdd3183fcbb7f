// `npm run bench:wrk`: the ratios of `npm run bench` again, with an independent load generator:
// wrk (Debian's package: apt-get install wrk) in its own process, with bench/wrk/postback.lua,
// against one bench server (bench/server.ts): GET /bench/noop, the naive receiver and the receiver,
// plus the floor and the bare floor (bench/floor.ts, each its own server process), in rounds that
// take turns; unique ids, half repeats, and a tenth status updates. On PostgreSQL (the default) every
// server writes into one fresh database; with --store pglite each server has a PGlite folder of its
// own, copied from one migrated folder (PGlite is one process's).
// Options: --store postgresql|pglite, --duration S per route and mix (10), --rounds N (2), --warmup S per route before the
// first mix (2; the floor is a process of its own and would otherwise pay its start-up, JIT and
// connections in its first measured slice), --connections N (50), --threads N (1), --pg-url URL,
// --env NAME=VALUE for the server, --routes (noop,floor,bare-floor,naive,receiver), --mixes
// (unique,half-repeats,updates, in the order given), --rows N: the bench's sheet holds N conversions
// before the first mix (as in `npm run bench -- --rows N`), --perf FILE: Linux perf's
// samples of both servers during the measured rounds into FILE, and where their CPU went per request
// (bench/perf-summary.ts; with --routes floor,receiver the app server's column is the receiver's;
// on PGlite with PostgreSQL's own functions named). Beside each route's rate and latency: the CPU its server and
// PostgreSQL's backends for the bench's database used per request while measured (from /proc; on
// PGlite the database is the server's), and how much of the machine sat idle (I/O wait included).
import { spawn, spawnSync } from 'node:child_process'
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { FLOOR_PATH } from './floor.ts'
import { PERF_FREQUENCY, perfTable } from './perf-summary.ts'
import { adminQuery, BENCH_SERVER_ENV, cpuSeconds, FLOOR_MODES, envPairs, prepareBenchStore, rowsOption, machineTicks, postgresCpuSeconds, postgresCpuUsed, table } from './support.ts'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const { values: args } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '50' },
    threads: { type: 'string', default: '1' },
    'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' },
    env: { type: 'string', multiple: true, default: [] },
    routes: { type: 'string', default: 'noop,floor,bare-floor,naive,receiver' },
    mixes: { type: 'string', default: 'unique,half-repeats,updates' },
    perf: { type: 'string' },
    rows: { type: 'string', default: '0' },
    store: { type: 'string', default: 'postgresql' },
  },
})
const filledRows = rowsOption(args.rows)
if (args.store !== 'postgresql' && args.store !== 'pglite') {
  console.error(`--store: postgresql or pglite, not ${args.store}`)
  process.exit(2)
}
const pglite = args.store === 'pglite'
const rounds = Math.max(1, Math.floor(Number(args.rounds)) || 1)
const slice = Number(args.duration) / rounds
const warmup = Number(args.warmup)
const ROUTES = { noop: '/bench/noop', floor: FLOOR_PATH, 'bare-floor': FLOOR_PATH, naive: '/bench/naive', receiver: '/meta/postback/conversion' } as const
type Route = keyof typeof ROUTES
const routes = args.routes.split(',').map((route) => {
  if (!Object.hasOwn(ROUTES, route)) {
    console.error(`--routes: unknown route ${route} (${Object.keys(ROUTES).join(', ')})`)
    process.exit(2)
  }
  return route as Route
})
// Each route and mix once: a round's ratios pair one run of each route, and a run's ids are unique by mix, route and round.
for (const [option, list] of [['--routes', args.routes], ['--mixes', args.mixes]] as const) {
  const names = list.split(',')
  if (new Set(names).size !== names.length) {
    console.error(`${option}: each at most once (${list})`)
    process.exit(2)
  }
}
// The server process of each route: the floors have one each, the other routes share the app's.
type ServerName = 'app' | 'floor' | 'bare-floor'
const serverOf = (route: Route): ServerName => (Object.hasOwn(FLOOR_MODES, route) ? (route as ServerName) : 'app')
const MIX_NAMES = ['unique', 'half-repeats', 'updates'] as const
type Mix = (typeof MIX_NAMES)[number]
// In the order given: the first mix runs on the freshest database and the least warmed-up servers.
const MIXES = args.mixes.split(',').map((mix) => {
  if (!(MIX_NAMES as readonly string[]).includes(mix)) {
    console.error(`--mixes: unknown mix ${mix} (${MIX_NAMES.join(', ')})`)
    process.exit(2)
  }
  return mix as Mix
})

if (spawnSync('wrk', ['--version']).error) {
  console.error('wrk is not installed: apt-get install -y wrk')
  process.exit(2)
}

if (args.perf && spawnSync('perf', ['--version']).status !== 0) {
  console.error('perf is not installed or does not run: apt-get install -y linux-perf')
  process.exit(2)
}

const admin = (sql: string) => adminQuery(args['pg-url'], sql)

const database = pglite ? undefined : `bench_wrk_${Date.now()}_${process.pid}`
const url = new URL(args['pg-url'])
if (database) url.pathname = `/${database}`
// PGlite: one migrated folder with the bench's sheet (and --rows), copied for each server before it
// starts (with --rows, a copy each: a folder of 10^5 rows was 289 MB, one of 10^7 about 29 GB).
const folders = pglite ? mkdtempSync(join(tmpdir(), 'postback-wrk-')) : undefined
const template = folders && join(folders, 'template')
// A DATABASE_URL of the caller's environment would make a PGlite server PostgreSQL's: left out.
const storeEnv = (name: string): Record<string, string | undefined> => {
  if (!folders) return { DATABASE_URL: url.toString() }
  const dir = join(folders, name)
  cpSync(template!, dir, { recursive: true })
  return { DATA_DIR: dir, DATABASE_URL: undefined }
}
const serverEnv = envPairs(args.env)
// Each server's stdout goes to a process of its own that reads and discards it, as a log collector
// reads a service's stdout (not /dev/null, which a server writes in other ways). It is a Unix socket
// pair (what Node.js makes for 'pipe'); a container runtime's is a FIFO, which the log's tests use.
const spawnServer = (name: string, mode: string[], env: Record<string, string>) => {
  const collector = spawn('cat', [], { stdio: ['pipe', 'ignore', 'inherit'] })
  const child = spawn(process.execPath, [...(args.perf ? ['--perf-basic-prof-only-functions'] : []), '--import', 'tsx', 'bench/server.ts', '511', ...mode], {
    cwd: ROOT,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...storeEnv(name), ...env },
    stdio: ['ignore', collector.stdin, 'inherit', 'ipc'],
  })
  // The server holds the pipe's write end now: the collector's input ends when the server's does.
  collector.stdin.destroy()
  return child
}
const SERVER_MODES: Record<string, string[]> = { app: [], ...FLOOR_MODES }
type Child = ReturnType<typeof spawnServer>
const servers = new Map<ServerName, Child>()
const stop = (child: Child) => {
  child.kill('SIGTERM')
  // One that has ended (by a signal too: no exit code then) is not waited for.
  return new Promise((resolve) => (child.exitCode === null && child.signalCode === null ? child.once('exit', resolve) : resolve(null)))
}
const cleanup = async () => {
  await Promise.all([...servers.values()].map(stop))
  if (folders) rmSync(folders, { recursive: true, force: true })
  else await admin(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)
}
process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130))
})

try {
  if (!template) await admin(`CREATE DATABASE ${database}`)
  // Migrated, with the bench's sheet (and --rows, filled and folded), before any server starts.
  const store = await openDatabase(loadConfig(template ? { DATA_DIR: template } : { DATABASE_URL: url.toString() }))
  await prepareBenchStore(store, 'bench', filledRows, (message) => console.log(message)).finally(() => store.close())
  for (const name of new Set(routes.map(serverOf))) {
    servers.set(name, spawnServer(name, SERVER_MODES[name]!, name === 'app' ? { ...BENCH_SERVER_ENV, ...serverEnv } : {}))
  }
  const listening = (child: Child) =>
    new Promise<string>((resolve, reject) => {
      child.once('message', (message: { url: string }) => resolve(message.url))
      child.once('exit', (code) => reject(new Error(`bench server exited (${code})`)))
    })
  const bases = new Map(await Promise.all([...servers].map(async ([name, child]) => [name, await listening(child)] as const)))
  const baseOf = (route: Route) => bases.get(serverOf(route))!
  const pidOf = (route: Route) => servers.get(serverOf(route))!.pid!
  console.log(`${args.store}: wrk ${args.threads} thread(s), ${args.connections} connections, ${warmup} s warm-up per route, then ${rounds} rounds of ${slice} s per route; the sheet held ${filledRows} conversions before the first mix; ${cpus().length} cores, load ${loadavg()[0]!.toFixed(2)}`)
  const stamp = Date.now().toString(36)
  const runWrk = (route: Route, seconds: number, prefix: string, mix: Mix) =>
    spawnSync(
      'wrk',
      ['-t', args.threads, '-c', args.connections, '-d', `${seconds}s`, '--timeout', '10s', '--latency', '-s', 'bench/wrk/postback.lua', baseOf(route)],
      {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, WRK_PATH: ROUTES[route], WRK_SHEET: 'bench', WRK_PREFIX: prefix, WRK_REPEATS: mix === 'half-repeats' ? '1' : '0', WRK_UPDATES: mix === 'updates' ? '1' : '0' },
      },
    )
  if (warmup > 0) for (const route of routes) runWrk(route, warmup, `${stamp}-warmup-${route}`, 'unique')
  // Requests each server answered while perf recorded it.
  const answered = new Map<ServerName, number>()
  // Only the servers of the routes measured run.
  const measured = [...servers]
  const recorded = measured.map(([, child]) => child.pid!)
  const perf = args.perf
    ? spawn('perf', ['record', '-e', 'cpu-clock', '-F', String(PERF_FREQUENCY), '-g', '-p', recorded.join(','), '-o', args.perf], { stdio: ['ignore', 'ignore', 'pipe'] })
    : undefined
  let perfErrors = ''
  perf?.stderr!.on('data', (chunk: Buffer) => (perfErrors += chunk.toString()))
  const perfExited = perf && new Promise((resolve) => perf.once('exit', resolve))
  // perf attaches to the processes before the first round; one refused (perf_event_paranoid, a
  // container's seccomp) has ended by then.
  if (perf) await new Promise((resolve) => setTimeout(resolve, 1000))
  if (perf && (perf.exitCode !== null || perf.signalCode !== null)) throw new Error(`perf record ended at once (${perf.exitCode ?? perf.signalCode}): ${perfErrors.trim()}`)
  const rows: string[][] = [['mix', 'route', 'req/s', 'p50 ms', 'p99 ms', 'p99 ms, median of rounds', 'non-2xx', 'socket errors', pglite ? 'CPU µs per request (server, PGlite in it)' : 'CPU µs per request server + pg', 'idle %']]
  const ratios: string[][] = [['mix', 'receiver / floor', 'by round', 'receiver / bare floor', 'naive / floor', 'no-db / floor', 'receiver / no-db', 'receiver / naive']]
  for (const mix of MIXES) {
    const totals = new Map<Route, { requests: number; seconds: number; rates: number[]; p50: number[]; p99: number[]; non2xx: number; errors: number; server: number; postgres: number; idle: number; ticks: number }>()
    const order = routes
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < order.length; i++) {
        const route = order[(i + round) % order.length]!
        const before = { server: cpuSeconds(pidOf(route)), postgres: postgresCpuSeconds(database), machine: machineTicks() }
        const result = runWrk(route, slice, `${stamp}-${mix}-${route}-${round}`, mix)
        const machine = machineTicks()
        const out = result.stdout
        const total = totals.get(route) ?? { requests: 0, seconds: 0, rates: [], p50: [], p99: [], non2xx: 0, errors: 0, server: 0, postgres: 0, idle: 0, ticks: 0 }
        total.server += cpuSeconds(pidOf(route)) - before.server
        total.postgres += postgresCpuUsed(before.postgres, postgresCpuSeconds(database)).backends
        total.idle += machine.idle - before.machine.idle
        total.ticks += machine.total - before.machine.total
        const done = /(\d+) requests in ([\d.]+)(ms|s|m)/.exec(out)
        if (!done) throw new Error(`unexpected wrk output:\n${out}\n${result.stderr}`)
        const seconds = Number(done[2]) * (done[3] === 'ms' ? 0.001 : done[3] === 'm' ? 60 : 1)
        total.requests += Number(done[1])
        answered.set(serverOf(route), (answered.get(serverOf(route)) ?? 0) + Number(done[1]))
        total.seconds += seconds
        total.rates.push(Number(done[1]) / seconds)
        const ms = (text: string | undefined) => (!text ? NaN : text.endsWith('us') ? parseFloat(text) / 1000 : text.endsWith('ms') ? parseFloat(text) : parseFloat(text) * 1000)
        total.p50.push(ms(/^\s+50%\s+(\S+)/m.exec(out)?.[1]))
        total.p99.push(ms(/^\s+99%\s+(\S+)/m.exec(out)?.[1]))
        total.non2xx += Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
        const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
        total.errors += socket ? socket.slice(1).reduce((n, v) => n + Number(v), 0) : 0
        totals.set(route, total)
      }
    }
    const rps = (route: Route) => totals.get(route)!.requests / totals.get(route)!.seconds
    const worst = (values: number[]) => Math.max(...values).toFixed(1)
    // The median: of an even count, the mean of the two middle values.
    const middle = (values: number[]) => {
      const sorted = [...values].sort((a, b) => a - b)
      const half = Math.floor(sorted.length / 2)
      return (sorted.length % 2 === 1 ? sorted[half]! : (sorted[half - 1]! + sorted[half]!) / 2).toFixed(1)
    }
    for (const route of order) {
      const t = totals.get(route)!
      const micros = (seconds: number) => ((1e6 * seconds) / Math.max(1, t.requests)).toFixed(1)
      const idle = Math.round((100 * t.idle) / Math.max(1, t.ticks))
      rows.push([mix, route, String(Math.round(rps(route))), middle(t.p50), worst(t.p99), middle(t.p99), String(t.non2xx), String(t.errors), pglite ? micros(t.server) : `${micros(t.server)} + ${micros(t.postgres)}`, String(idle)])
    }
    const over = (a: Route, b: Route) => (totals.has(a) && totals.has(b) ? (rps(a) / rps(b)).toFixed(2) : '-')
    // The rounds' own ratios, lowest to highest: how far one round's machine differs from the next.
    const byRound = (a: Route, b: Route) => {
      if (!totals.has(a) || !totals.has(b)) return '-'
      const each = totals.get(a)!.rates.map((rate, round) => rate / totals.get(b)!.rates[round]!)
      return `${Math.min(...each).toFixed(2)} to ${Math.max(...each).toFixed(2)}`
    }
    ratios.push([mix, over('receiver', 'floor'), byRound('receiver', 'floor'), over('receiver', 'bare-floor'), over('naive', 'floor'), over('noop', 'floor'), over('receiver', 'noop'), over('receiver', 'naive')])
  }
  console.log(`\n${table(rows)}\n\n${table(ratios)}\n\np50: the median of the rounds' medians; p99: the worst round's, and the median of the rounds' (one stall of the machine in one round sets the worst; with 2 rounds, their mean); by round: the lowest and highest of the rounds' own ratios (a round runs each route once); CPU per request: ${pglite ? 'the server\'s process (all its threads; its PGlite in it)' : 'the server\'s process (all its threads) and PostgreSQL\'s backends for this database (the noop route\'s: none)'}; the app's rollup fold runs in the app's server. Load average now ${loadavg()[0]!.toFixed(2)}.`)
  if (perf) {
    perf.kill('SIGINT')
    await perfExited
    const app = routes.filter((route) => serverOf(route) === 'app').join(' + ')
    console.log(`\nperf (${args.perf}): CPU of each server's main thread per request, by part\n`)
    // Its warnings at the end (lost chunks, samples left out) would make the figures low unsaid.
    if (perfErrors.trim()) console.log(`perf record said:\n${perfErrors.trim()}\n`)
    try {
      const names = (name: ServerName) => (name === 'app' ? app : name)
      console.log(await perfTable(args.perf!, measured.map(([name, child]) => ({ name: names(name), pid: child.pid!, requests: answered.get(name) ?? 0 }))))
    } catch (error) {
      console.error(`the perf summary failed: ${(error as Error).message}`)
    }
  }
} finally {
  await cleanup()
}
