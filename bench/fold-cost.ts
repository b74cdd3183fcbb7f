// What keeping the summary's rollups costs the receiver on PostgreSQL: the batch statement of
// src/conversion-batch.ts writing new conversions (50 a statement, 4 statements in flight, 300 ads)
// into two fresh databases in alternating rounds; in one, the background fold runs as in the service
// (every second) and the round ends only when every row it wrote is folded (so the round pays for
// all of its folding); the other is never folded. Prints rows/s and the ratio.
//   npx tsx bench/fold-cost.ts [--rounds 6] [--rows 30000]
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { writeDeliveries } from '../src/conversion-batch.ts'
import { openDatabase } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { foldAll, RollupFolder } from '../src/rollups.ts'
import { scratchDatabase } from './support.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '6' }, rows: { type: 'string', default: '30000' }, 'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' } } })
const rounds = Number(values.rounds)
const rowsPerRound = Number(values.rows)
const stamp = Date.now()
const dbs = []
for (const variant of [
  { label: 'folded', name: `foldcost_with_${stamp}`, fold: true },
  { label: 'never folded', name: `foldcost_without_${stamp}`, fold: false },
]) {
  const scratch = await scratchDatabase(values['pg-url']!, variant.name)
  const db = await openDatabase(loadConfig({ DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' }))
  await db.withSession((session) => migrate(session))
  await db.prisma.$executeRawUnsafe(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('bench', 'bench', 'USD')`)
  dbs.push({ ...variant, db, drop: scratch.drop })
}
const totals = new Map<string, { rows: number; ms: number }>()
const roundRatios: number[] = []
let sequence = 0
for (let round = 0; round < rounds; round++) {
  const roundRates = new Map<string, number>()
  for (const variant of round % 2 === 0 ? dbs : [...dbs].reverse()) {
    const folder = variant.fold ? new RollupFolder(variant.db.prisma, { intervalMs: 1000, onError: (error) => console.error(error) }) : undefined
    const started = performance.now()
    folder?.start()
    let next = 0
    await Promise.all(
      Array.from({ length: 4 }, async () => {
        while (next < rowsPerRound) {
          next += 50
          const batch = Array.from({ length: 50 }, () => ({ sheet_id: 'bench', transaction_id: `t${sequence++}`, payout: '1.50', campaign_id: `c${sequence % 10}`, ad_id: `a${sequence % 300}` }))
          await writeDeliveries((statement) => variant.db.query(statement), batch as never)
        }
      }),
    )
    if (folder) {
      await folder.stop()
      await foldAll(variant.db.prisma)
    }
    const ms = performance.now() - started
    const total = totals.get(variant.label) ?? { rows: 0, ms: 0 }
    totals.set(variant.label, { rows: total.rows + rowsPerRound, ms: total.ms + ms })
    roundRates.set(variant.label, rowsPerRound / ms)
  }
  roundRatios.push(roundRates.get(dbs[0]!.label)! / roundRates.get(dbs[1]!.label)!)
}
const rates = [...totals].map(([label, { rows, ms }]) => ({ label, rate: (rows / ms) * 1000 }))
for (const { label, rate } of rates) console.log(`${label.padEnd(14)} ${rate.toFixed(0)} rows/s`)
const sorted = [...roundRatios].sort((a, b) => a - b)
const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2
console.log(`ratio folded / never folded: ${(rates[0]!.rate / rates[1]!.rate).toFixed(3)} overall; per round ${roundRatios.map((r) => r.toFixed(2)).join(' ')}, median ${median.toFixed(3)}`)
for (const variant of dbs) {
  await variant.db.close()
  await variant.drop()
}
