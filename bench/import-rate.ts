// The import's rate on PostgreSQL: writes a CSV of N lines (one sheet, 300 ads, 90 days, a tenth of
// the lines later moving a conversion), imports it into a fresh database with postback-admin import,
// and prints lines/s and the process's peak RSS. A second run of the same file shows the repeat path.
//   npx tsx bench/import-rate.ts [--lines 500000] [--no-fold] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { parseArgs } from 'node:util'
import { run } from '../src/cli.ts'
import { scratchDatabase } from './support.ts'

const { values } = parseArgs({ options: { lines: { type: 'string', default: '500000' }, 'no-fold': { type: 'boolean', default: false }, 'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' } } })
const lines = Number(values.lines)
const dir = mkdtempSync(join(tmpdir(), 'import-rate-'))
const file = join(dir, 'export.csv')
const out = createWriteStream(file)
out.write('transaction_id,payout,currency,campaign_id,adset_id,ad_id,status,received_at\n')
const start = Date.parse('2026-08-01T00:00:00Z')
for (let i = 0; i < lines; i++) {
  // Nine lines in ten store a conversion (odd numbers pending, even approved); the tenth approves a pending one.
  const move = i % 10 === 9
  const n = move ? i - 8 : i
  const ad = n % 300
  const at = new Date(start + Math.floor((n / lines) * 90 * 86_400_000)).toISOString()
  const line = `t${n},${(n % 5000) / 100},USD,c${ad % 10},s${ad % 50},a${ad},${move ? 'sale' : n % 2 ? 'lead' : 'sale'},${at}\n`
  if (!out.write(line)) await once(out, 'drain')
}
out.end()
await once(out, 'finish')

const scratch = await scratchDatabase(values['pg-url']!, `import_rate_${Date.now()}`)
const env = { DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' }
const quiet = { stdout: { write: (text: string) => (last = text) }, stderr: { write: () => true } }
let last = ''
await run(['migrate'], env, quiet)
await run(['sheet', 'create', '--id', 'bench'], env, quiet)
for (const label of ['first run', 'second run (repeats)']) {
  const started = performance.now()
  const code = await run(['import', '--sheet', 'bench', ...(values['no-fold'] ? ['--no-fold'] : []), file], env, quiet)
  const seconds = (performance.now() - started) / 1000
  console.log(`${label}: exit ${code}, ${lines} lines in ${seconds.toFixed(1)} s = ${Math.round(lines / seconds)} lines/s; ${last.trim()}`)
}
console.log(`peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MB`)
await scratch.drop()
rmSync(dir, { recursive: true, force: true })
