// Where a server's CPU goes per request, from Linux perf's on-CPU samples (`npm run bench:wrk --
// --perf FILE` records them): each sample of the server's main thread goes to the first frame of
// its stack, from the leaf up, that belongs to one of the receiver's parts (the access line, a rate
// limit, the writer, the pg driver, Node's HTTP, ...). A sample with PGlite's WebAssembly on its
// stack (PostgreSQL itself, on PGlite) goes to a part of PGlite's by the PostgreSQL functions
// on its stack (PGLITE_PARTS). V8's own profiler (`--cpu-prof`) samples wall
// time on the main thread, so on a busy 2-core machine the time a thread waits for a core lands on
// whatever frame it stopped in (seen: process.nextTick at 5 µs a request); perf counts only time on
// a core, and its samples add up to the CPU /proc reports.
// Usage: tsx bench/perf-summary.ts PERF.DATA PID=REQUESTS [PID=REQUESTS ...]
// Needs `perf` (apt-get install linux-perf) and servers started with --perf-basic-prof-only-functions;
// record with `-e cpu-clock -F 999` (each sample is then 1/999 s on a core).
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { argv } from 'node:process'
import { table } from './support.ts'

/** Sampling frequency of `perf record -F`: each sample stands for 1/FREQUENCY s on a core. */
export const PERF_FREQUENCY = 999

// The first match from the leaf up names a sample's part; more specific parts come first.
const PARTS: Array<[string, RegExp]> = [
  ['access line', /requestCompleted|requestJson|requestLogger|src\/logger\.ts|sonic-boom|pino/],
  ['rate limits', /plugins\/rate-limit\.ts/],
  ['sheet security', /checkSheetSecurity|sheet-security\.ts/],
  ['receiver route (its own code)', /plugins\/receiver\.ts/],
  ['metrics', /plugins\/metrics\.ts|prom-client/],
  ['request id', /request-id\.ts|src\/logging\.ts|randomUUID|internal\/crypto/],
  ['query and validation', /src\/delivery\.ts|src\/query-string\.ts|fast-querystring|fastify\/lib\/validation/],
  ['writer and batch', /conversion-writer\.ts|conversion-batch\.ts|bench\/floor\.ts/],
  // PGlite's own JavaScript, when not called from its WebAssembly: its protocol messages, the rows' parsing.
  ['PGlite: its JavaScript (messages, rows)', /@electric-sql\/|src\/pglite-prepared\.ts/],
  ['pg driver', /node_modules\/pg\/|pg-protocol|pg-pool|src\/database\.ts|src\/pg-pool\.ts/],
  ['garbage collection', /Scaveng|MarkCompact|CollectGarbage|Heap::|Sweeper|IncrementalMarking|ConcurrentMarking/],
  ['fastify: reply and hooks', /fastify\/lib\/(reply|hooks)/],
  ['fastify: routing', /find-my-way|fastify\/fastify\.js|fastify\/lib\/(route|handle-request|request|context)/],
  ['node: http answer', /_http_outgoing|_http_server|internal\/streams\/writable|stream_base_commons|writev|node:net/],
  ['node: http parse', /llhttp|_http_common|_http_incoming|node::.*Parser::/],
  ['Prisma (background)', /@prisma|wasm/],
]
const OTHER = 'other'

// PostgreSQL inside PGlite's WebAssembly. perf names a WebAssembly function by its index only
// ("wasm-function[923]"), but pglite.wasm exports about 2,000 of PostgreSQL's functions by name (for
// extensions), and the index is the export's: 923 is _bt_compare. The executor's nodes and other
// static functions are not exported, so a sample goes to the first part whose function is anywhere
// on its stack. A stack of WebAssembly is PGlite's when PGlite's JavaScript called it: Prisma's
// query compiler is WebAssembly too, with indexes of its own. Caveats: PL/pgSQL is a module of its
// own inside PGlite (its frames' indexes are not pglite.wasm's; a session function's own work, its
// IF and GET DIAGNOSTICS, and setting its settings at each call, land in "executor, outside
// functions" or the rest), Emscripten's JavaScript called from the WebAssembly (file writes) counts
// in the part of the PostgreSQL function that called it, and XLogFlush is reached by a checkpoint's
// buffer writes too.
const PGLITE_PARTS: Array<[string, RegExp]> = [
  ['PGlite: statements in session functions (SPI)', /^SPI_execute/],
  ['PGlite: commit (WAL written)', /^(CommitTransactionCommand|XLogFlush)$/],
  ['PGlite: planning, outside functions', /^(pg_plan_query|standard_planner)$/],
  ['PGlite: executor, outside functions', /^(ExecutorStart|standard_ExecutorRun|ExecutorFinish|ExecutorEnd)$/],
  ['PGlite: parsing, protocol, the rest', /./],
]

let pgliteNames: Map<number, string> | undefined
/** PostgreSQL's function names in pglite.wasm, by function index (its export section). */
function pgliteFunctionNames(): Map<number, string> {
  if (pgliteNames) return pgliteNames
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite')
  const bytes = readFileSync(join(dirname(entry), 'pglite.wasm'))
  let at = 8
  const uint = () => {
    let value = 0
    let shift = 0
    let byte: number
    do {
      byte = bytes[at++]!
      value += (byte & 0x7f) * 2 ** shift
      shift += 7
    } while (byte & 0x80)
    return value
  }
  const names = new Map<number, string>()
  while (at < bytes.length) {
    const section = bytes[at++]!
    const end = uint() + at
    // The export section: (name, kind, index) each; kind 0 is a function.
    if (section === 7) {
      for (let count = uint(); count > 0; count--) {
        const length = uint()
        const name = bytes.toString('utf8', at, at + length)
        at += length
        const kind = bytes[at++]!
        const index = uint()
        if (kind === 0) names.set(index, name)
      }
    }
    at = end
  }
  return (pgliteNames = names)
}

// "\t    7f6087158746 JS:*parserOnHeadersComplete node:_http_common:71:33": the address, then the symbol.
const symbolOf = (line: string) => line.trim().replace(/^[0-9a-f]+ /, '')
const WASM = /wasm-function\[(\d+)\]/

/** The part of one sample, from its stack's symbols, leaf first. */
function partOf(frames: string[]): string {
  const deepest = frames.findLastIndex((frame) => WASM.test(frame))
  // The JavaScript that called into the WebAssembly: its module tells whose it is. Only PGlite's is
  // read by PostgreSQL's names; Prisma's (and any other) goes by the frames, as every other sample.
  const caller = deepest >= 0 ? frames.slice(deepest + 1).find((frame) => frame.startsWith('JS:') && !/wasm|js-to-/.test(frame)) : undefined
  if (caller !== undefined && /@electric-sql\//.test(caller)) {
    const names = pgliteFunctionNames()
    const functions = frames.flatMap((frame) => {
      const name = names.get(Number(WASM.exec(frame)?.[1] ?? -1))
      return name === undefined ? [] : [name]
    })
    return PGLITE_PARTS.find(([, pattern]) => functions.some((name) => pattern.test(name)))?.[0] ?? PGLITE_PARTS.at(-1)![0]
  }
  for (const frame of frames) {
    const part = PARTS.find(([, pattern]) => pattern.test(frame))?.[0]
    if (part !== undefined) return part
  }
  return OTHER
}

/** Per thread id, the samples of each part (perf's output read line by line: a long run's is gigabytes). */
export async function perfParts(file: string, tids: number[]): Promise<Map<number, Map<string, number>>> {
  const script = spawn('perf', ['script', '-i', file, '--tid', tids.join(','), '-F', 'tid,ip,sym'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let stderr = ''
  script.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<number | null>((resolve, reject) => {
    script.once('error', reject)
    script.once('close', resolve)
  })
  // Awaited after the output is read; a failure to start must not go unhandled meanwhile.
  exited.catch(() => undefined)
  const parts = new Map<number, Map<string, number>>(tids.map((tid) => [tid, new Map()]))
  let tid: number | undefined
  let frames: string[] = []
  const close = () => {
    if (tid === undefined) return
    const counts = parts.get(tid)
    const part = partOf(frames)
    if (counts) counts.set(part, (counts.get(part) ?? 0) + 1)
  }
  for await (const line of createInterface({ input: script.stdout, crlfDelay: Infinity })) {
    if (line === '') continue
    // A sample's first line is its thread id (padded with spaces), its frames' lines start with a tab.
    if (line[0] !== '\t') {
      close()
      tid = Number(line.trim().split(/\s+/)[0])
      frames = []
      continue
    }
    frames.push(symbolOf(line))
  }
  close()
  const code = await exited
  if (code !== 0) throw new Error(`perf script failed (${code}): ${stderr.trim()}`)
  return parts
}

/** A table of µs of a core per request, by part, one column per server (a server that answered nothing is left out). */
export async function perfTable(file: string, servers: Array<{ name: string; pid: number; requests: number }>): Promise<string> {
  servers = servers.filter(({ requests }) => requests > 0)
  const parts = await perfParts(file, servers.map(({ pid }) => pid))
  const micros = (samples: number, requests: number) => ((1e6 / PERF_FREQUENCY) * samples) / requests
  const names = [...PARTS.map(([name]) => name), ...PGLITE_PARTS.map(([name]) => name), OTHER]
  const rows = [['µs of the main thread per request', ...servers.map(({ name }) => name)]]
  for (const name of names) {
    // PGlite's parts only where PGlite ran.
    if (name.startsWith('PGlite') && servers.every(({ pid }) => !parts.get(pid)!.has(name))) continue
    rows.push([name, ...servers.map(({ pid, requests }) => micros(parts.get(pid)!.get(name) ?? 0, requests).toFixed(1))])
  }
  const total = (pid: number) => [...parts.get(pid)!.values()].reduce((a, b) => a + b, 0)
  rows.push(['total', ...servers.map(({ pid, requests }) => micros(total(pid), requests).toFixed(1))])
  return table(rows)
}

if (import.meta.url === `file://${argv[1]}`) {
  const [file, ...pairs] = argv.slice(2)
  if (!file || pairs.length === 0) {
    console.error('usage: tsx bench/perf-summary.ts PERF.DATA PID=REQUESTS [PID=REQUESTS ...]')
    process.exit(2)
  }
  const servers = pairs.map((pair) => {
    const [pid, requests] = pair.split('=').map(Number)
    return { name: String(pid), pid: pid!, requests: requests! }
  })
  console.log(await perfTable(file, servers))
}
