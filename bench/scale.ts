// How costs grow with the table (npm run bench:scale), on PostgreSQL: fills a fresh database through
// `postback-admin import` to each size in turn (one busy sheet of 300 ads over 90 days, a tenth of
// its lines later moving a conversion, and five small sheets of a hundredth of its size each), folds
// the rollups (timed apart from the import, which leaves it with --no-fold), then times at that size (median of 5, through the app's routes): the summary shapes,
// list pages (first, deep, filtered, a global key's), the import rate, the fold rate, and the
// receiver's batch statement (new conversions, 4 statements in flight) against its rate on the
// empty table. Prints a Markdown table for BENCHMARKS.md.
//   npx tsx bench/scale.ts [--sizes 100000,1000000,10000000] [--keep] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { buildApp } from '../src/app.ts'
import { run } from '../src/cli.ts'
import { writeDeliveries } from '../src/conversion-batch.ts'
import { loadConfig } from '../src/config.ts'
import { foldAll } from '../src/rollups.ts'
import { LIST_SHAPES, managementReader, scratchDatabase, table } from './support.ts'

const { values } = parseArgs({
  options: { sizes: { type: 'string', default: '100000,1000000' }, keep: { type: 'boolean', default: false }, 'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' } },
})
const sizes = values.sizes!.split(',').map(Number)
const dir = mkdtempSync(join(tmpdir(), 'bench-scale-'))
const scratch = await scratchDatabase(values['pg-url']!, `bench_scale_${Date.now()}`)
const env = { DATABASE_URL: scratch.url, LOG_LEVEL: 'silent', ROLLUP_FOLD_INTERVAL_MS: '3600000', MANAGEMENT_RATE_LIMIT: '100000000' }
let last = ''
const quiet = { stdout: { write: (text: string) => (last = text) }, stderr: { write: () => true } }
await run(['migrate'], env, quiet)
const SMALL = ['small-1', 'small-2', 'small-3', 'small-4', 'small-5']
for (const sheet of ['busy', ...SMALL]) await run(['sheet', 'create', '--id', sheet], env, quiet)

const DAYS = 90
const START = Date.parse('2026-08-01T00:00:00Z')

/** Lines [from, to) of a sheet's export: line i stores conversion i, except every tenth, which approves a pending one. */
async function writeCsv(file: string, prefix: string, from: number, to: number, total: number): Promise<void> {
  const out = createWriteStream(file)
  out.write('transaction_id,payout,currency,campaign_id,adset_id,ad_id,status,received_at\n')
  for (let i = from; i < to; i++) {
    const move = i % 10 === 9
    const n = move ? i - 8 : i
    const ad = n % 300
    // Spread over 90 days by position in the final size, so that each step adds rows across the days.
    const at = new Date(START + Math.floor(((n * 7919) % total) / total * DAYS * 86_400_000)).toISOString()
    const line = `${prefix}${n},${(n % 5000) / 100},${n % 7 === 0 ? 'EUR' : 'USD'},c${ad % 10},s${ad % 50},a${ad},${move ? 'sale' : n % 2 ? 'lead' : 'sale'},${at}\n`
    if (!out.write(line)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
}

async function importLines(sheet: string, prefix: string, from: number, to: number, total: number): Promise<number> {
  const file = join(dir, `${sheet}.csv`)
  await writeCsv(file, prefix, from, to, total)
  const started = performance.now()
  const code = await run(['import', '--sheet', sheet, '--no-fold', file], env, quiet)
  if (code !== 0) throw new Error(`import failed: ${last}`)
  rmSync(file)
  return (to - from) / ((performance.now() - started) / 1000)
}

const app = await buildApp(loadConfig(env))
await app.ready()
const reader = await managementReader(app)
const timed = async (url: string) => (await reader.timed(url, 5)).ms

/** New conversions per second through the receiver's batch statement: batches of 100, 4 in flight, 3 s. */
async function writeRate(round: number): Promise<number> {
  let written = 0
  let sequence = 0
  const until = performance.now() + 3000
  const started = performance.now()
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (performance.now() < until) {
        const batch = Array.from({ length: 100 }, () => ({ sheet_id: 'busy', transaction_id: `w${round}-${sequence++}`, payout: '1.50', campaign_id: 'c1', ad_id: `a${sequence % 300}` }))
        await writeDeliveries((statement) => app.db.query(statement), batch)
        written += batch.length
      }
    }),
  )
  return written / ((performance.now() - started) / 1000)
}

const SHAPES: Array<[string, string]> = [
  ['ad x day, 30 days, Asia/Kolkata', '/summary?sheet_id=busy&group_by=ad&interval=day&tz=Asia/Kolkata&from=2026-09-01T00:00:00%2B05:30&to=2026-10-01T00:00:00%2B05:30'],
  ['campaign x day, 30 days, Asia/Kathmandu', '/summary?sheet_id=busy&group_by=campaign&interval=day&tz=Asia/Kathmandu&from=2026-09-01T00:00:00%2B05:45&to=2026-10-01T00:00:00%2B05:45'],
  ['campaign, all time', '/summary?sheet_id=busy&group_by=campaign'],
  ['small sheet, campaign', '/summary?sheet_id=small-1&group_by=campaign'],
  ...LIST_SHAPES,
]

const results: string[][] = [['rows', 'import lines/s', 'fold changes/s', ...SHAPES.map(([name]) => `${name} (ms)`), 'list, page 21 (ms)', 'batch statement rows/s (vs empty)']]
const emptyRate = await writeRate(0)
let filled = 0
for (const size of sizes) {
  const busy = Math.round(size * 0.95)
  const small = Math.round((size - busy) / SMALL.length)
  const busyFrom = Math.round(filled * 0.95)
  const smallFrom = Math.round((filled - busyFrom) / SMALL.length)
  const rate = await importLines('busy', 't', busyFrom, busy, busy)
  for (const sheet of SMALL) await importLines(sheet, `${sheet}-`, smallFrom, small, small)
  filled = size
  // A summary by day in a zone asks for its day phase (the first time); the fold fills it.
  for (const [, url] of SHAPES.slice(0, 2)) await reader.get(url)
  const foldStarted = performance.now()
  const folded = await foldAll(app.prisma)
  const foldRate = folded / ((performance.now() - foldStarted) / 1000)
  await app.db.withSession((session) => session.exec('ANALYZE'))
  const row = [String(size), String(Math.round(rate)), String(Math.round(foldRate))]
  for (const [, url] of SHAPES) row.push((await timed(url)).toFixed(1))
  // Deep into the busy sheet's list: the cursor after 20 pages of 500.
  const cursor = await reader.cursorAfter('/conversions?sheet_id=busy&limit=500', 20)
  row.push((await timed(`/conversions?sheet_id=busy&limit=500&cursor=${cursor}`)).toFixed(1))
  const writes = await writeRate(size)
  row.push(`${Math.round(writes)} (${(writes / emptyRate).toFixed(2)})`)
  results.push(row)
  console.log(`${size} rows: ${row.join(' | ')}`)
}
console.log(`\nbatch statement on the empty table: ${Math.round(emptyRate)} rows/s\n`)
console.log(table(results))
await app.close()
if (values.keep) console.log(`kept the database: ${scratch.url}`)
else await scratch.drop()
rmSync(dir, { recursive: true, force: true })
