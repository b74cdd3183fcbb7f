// Reconciliation at scale (npm run bench:reconcile), on PostgreSQL: a sheet of --rows conversions
// (10^7 by default, 90 days; written by SQL, not the import, which bench:scale times) and network
// exports of the first 9 days (about a tenth) cut to --exports lines, with every kind of difference
// (1% missing here, 1% missing there, 1% payout, 0.5% status, 0.2% currency) and rejected
// deliveries in the log. Each export is reconciled by `postback-admin reconcile --out` in this
// process, beside the floor: the least a reconciliation of the same design does (the file read and
// split by csv-parse, the lines staged by the same unnest inserts without any value check, one
// join and one anti-join that only count). Prints time, lines/s, peak RSS and the ratio to the floor.
//   npx tsx bench/reconcile.ts [--rows 10000000] [--exports 100000,1000000] [--keep] [--db URL-of-a-database-it-filled-and-kept]
// (the first 9 days hold about 990,000 conversions, so the "10^6" export has that many lines)
import { createReadStream, createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parse } from 'csv-parse'
import pg from 'pg'
import { run } from '../src/cli.ts'
import { scratchDatabase, table } from './support.ts'

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '10000000' },
    exports: { type: 'string', default: '100000,1000000' },
    'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' },
    keep: { type: 'boolean', default: false },
    db: { type: 'string' },
  },
})
const ROWS = Number(values.rows)
const DAYS = 90
const START = Date.parse('2026-08-01T00:00:00Z')
const dir = mkdtempSync(join(tmpdir(), 'bench-reconcile-'))
const scratch = values.db ? { url: values.db, drop: async () => {} } : await scratchDatabase(values['pg-url']!, `bench_reconcile_${Date.now()}`)
const env = { DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' }
let last = ''
const quiet = { stdout: { write: (text: string) => (last = text) }, stderr: { write: () => true } }
const db = new pg.Client({ connectionString: scratch.url })
await db.connect()

// Conversion i's time: spread over 90 days by a permutation of i.
const dayOf = (i: number) => (((i * 7919) % ROWS) / ROWS) * DAYS

if (!values.db) {
  await run(['migrate'], env, quiet)
  await run(['sheet', 'create', '--id', 'busy'], env, quiet)
  const started = performance.now()
  for (let from = 0; from < ROWS; from += 1_000_000) {
    const to = Math.min(ROWS, from + 1_000_000)
    await db.query(
      `INSERT INTO conversions (sheet_id, transaction_id, payout, currency, status, received_at, campaign_id, adset_id, ad_id)
       SELECT 'busy', 't' || i, (i % 5000) / 100.0, CASE WHEN i % 7 = 0 THEN 'EUR' ELSE 'USD' END, CASE WHEN i % 2 = 0 THEN 'approved' ELSE 'pending' END,
         $3::timestamptz + make_interval(secs => ((i::bigint * 7919) % $4) / $4::float8 * ${DAYS * 86400}), 'c' || i % 10, 's' || i % 50, 'a' || i % 300
       FROM generate_series($1::int, $2::int - 1) AS i`,
      [from, to, new Date(START).toISOString(), ROWS],
    )
  }
  // Rejected deliveries: the log's usual bound per sheet, a third of them for ids of the export.
  await db.query(
    `INSERT INTO delivery_rejections (sheet_id, reason, parameter, raw_query)
     SELECT 'busy', 'invalid_parameter', 'payout', 'sheet_id=busy&transaction_id=x' || (i * 3) || '&payout=abc' FROM generate_series(1, 1000) AS i`,
  )
  await db.query('VACUUM ANALYZE conversions')
  console.log(`filled ${ROWS} conversions in ${((performance.now() - started) / 1000).toFixed(0)} s: ${scratch.url}`)
}

/** An export of the first 9 days cut to `lines` lines, with each kind of difference. */
async function writeExport(file: string, lines: number): Promise<number> {
  const out = createWriteStream(file)
  out.write('transaction_id,payout,currency,status,received_at\n')
  let written = 0
  for (let i = 0; i < ROWS && written < lines; i++) {
    const day = dayOf(i)
    if (day >= 9) continue
    const at = new Date(START + day * 86_400_000).toISOString()
    let id = `t${i}`
    let payout = ((i % 5000) / 100).toFixed(2)
    let currency = i % 7 === 0 ? 'EUR' : 'USD'
    let status = i % 2 === 0 ? 'sale' : 'lead'
    const roll = (i * 2654435761) % 1000
    if (roll < 10) continue // missing there
    else if (roll < 20) id = `x${i}` // missing here (a third of them with a rejected delivery)
    else if (roll < 30) payout = (Number(payout) + 1).toFixed(2)
    else if (roll < 35) status = 'rejected'
    else if (roll < 37) currency = currency === 'USD' ? 'GBP' : 'USD'
    const line = `${id},${payout},${currency},${status},${at}\n`
    written++
    if (!out.write(line)) await once(out, 'drain')
  }
  out.end()
  await once(out, 'finish')
  return written
}

/** The floor: read and split the file, stage its lines without checks, count the matched and the stored ones it lacks. */
async function floor(file: string): Promise<void> {
  await db.query('CREATE TEMPORARY TABLE floor_lines (transaction_id text, payout numeric, currency text, status text)')
  let chunk: string[][] = []
  const flush = async () => {
    if (chunk.length === 0) return
    await db.query('INSERT INTO floor_lines SELECT * FROM unnest($1::text[], $2::numeric[], $3::text[], $4::text[])', [0, 1, 2, 3].map((c) => chunk.map((r) => r[c])))
    chunk = []
  }
  // The window: the export's time range (its lines are in id order, their times in any order).
  let first: string | undefined
  let lastAt: string | undefined
  for await (const record of createReadStream(file).pipe(parse({ from_line: 2 })) as AsyncIterable<string[]>) {
    chunk.push(record)
    if (first === undefined || record[4]! < first) first = record[4]
    if (lastAt === undefined || record[4]! > lastAt) lastAt = record[4]
    if (chunk.length >= 5000) await flush()
  }
  await flush()
  await db.query('ANALYZE floor_lines')
  await db.query(
    `SELECT (SELECT count(*) FROM floor_lines e JOIN conversions c ON c.sheet_id = 'busy' AND c.transaction_id = e.transaction_id AND c.event = ''
             WHERE c.payout IS DISTINCT FROM e.payout),
            (SELECT count(*) FROM conversions c WHERE c.sheet_id = 'busy' AND c.received_at >= $1 AND c.received_at <= $2
             AND NOT EXISTS (SELECT FROM floor_lines e WHERE e.transaction_id = c.transaction_id))`,
    [first, lastAt],
  )
  await db.query('DROP TABLE floor_lines')
}

let peak = 0
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50)
const timed = async (work: () => Promise<void>) => {
  peak = process.memoryUsage().rss
  const started = performance.now()
  await work()
  return { seconds: (performance.now() - started) / 1000, rssMb: Math.round(peak / 1e6) }
}

const results: string[][] = []
for (const size of values.exports!.split(',').map(Number)) {
  const file = join(dir, `export-${size}.csv`)
  const lines = await writeExport(file, size)
  const out = join(dir, `differences-${size}.csv`)
  const ours = await timed(async () => {
    const code = await run(['reconcile', '--sheet', 'busy', '--out', out, file], env, quiet)
    if (code !== 0) throw new Error(`reconcile failed: ${last}`)
  })
  const report = JSON.parse(last) as { counts: Record<string, number>; lines: { rejected: number } }
  const base = await timed(() => floor(file))
  results.push([
    String(lines),
    ours.seconds.toFixed(1),
    String(Math.round(lines / ours.seconds)),
    String(ours.rssMb),
    base.seconds.toFixed(1),
    (base.seconds / ours.seconds).toFixed(2),
    `${Object.entries(report.counts).map(([kind, n]) => `${kind} ${n}`).join(', ')}; ${report.lines.rejected} bad lines`,
  ])
  console.log(results.at(-1)!.join(' | '))
}
clearInterval(sampler)
console.log(`\nreconcile against ${ROWS} stored conversions (PostgreSQL, this machine):\n`)
console.log(table([['export lines', 'reconcile s', 'lines/s', 'peak RSS MB', 'floor s', 'floor / reconcile', 'differences found'], ...results]))
await db.end()
rmSync(dir, { recursive: true, force: true })
if (!values.keep && !values.db) await scratch.drop()
else console.log(`kept ${scratch.url}`)
