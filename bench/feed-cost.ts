// What the change feed's key costs the receiver's statement on PostgreSQL: the batch statement of
// src/conversion-batch.ts writing new conversions (50 a statement, 4 statements in flight) into two
// fresh databases, one migrated as is and one without the feed's key and index (the table as it was
// before the feed), in alternating rounds. Prints rows/s and the ratio.
//   npx tsx bench/feed-cost.ts [--rounds 6] [--rows 20000]
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { writeDeliveries } from '../src/conversion-batch.ts'
import { openDatabase } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { scratchDatabase } from './support.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '6' }, rows: { type: 'string', default: '20000' }, 'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' } } })
const rounds = Number(values.rounds)
const rowsPerRound = Number(values.rows)
const stamp = Date.now()
const variants = [
  { label: 'with the feed key', name: `feedcost_with_${stamp}`, strip: false },
  { label: 'without (before)', name: `feedcost_without_${stamp}`, strip: true },
]
const dbs = []
for (const variant of variants) {
  const scratch = await scratchDatabase(values['pg-url']!, variant.name)
  const db = await openDatabase(loadConfig({ DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' }))
  await db.withSession((session) => migrate(session))
  await db.prisma.$executeRawUnsafe(`INSERT INTO sheets (sheet_id, name, default_currency) VALUES ('bench', 'bench', 'USD')`)
  if (variant.strip) {
    await db.prisma.$executeRawUnsafe('DROP INDEX conversions_stored_key_id_idx')
    await db.prisma.$executeRawUnsafe('ALTER TABLE conversions ALTER COLUMN stored_key DROP NOT NULL, ALTER COLUMN stored_key DROP DEFAULT')
  }
  dbs.push({ ...variant, db, drop: scratch.drop })
}
const totals = new Map<string, { rows: number; ms: number }>()
const roundRatios: number[] = []
let sequence = 0
for (let round = 0; round < rounds; round++) {
  const roundRates = new Map<string, number>()
  for (const variant of round % 2 === 0 ? dbs : [...dbs].reverse()) {
    const started = performance.now()
    let next = 0
    await Promise.all(Array.from({ length: 4 }, async () => {
      while (next < rowsPerRound) {
        next += 50
        const batch = Array.from({ length: 50 }, () => ({ sheet_id: 'bench', transaction_id: `t${sequence++}`, payout: '1.50' }))
        await writeDeliveries((statement) => variant.db.query(statement), batch as never)
      }
    }))
    const ms = performance.now() - started
    const total = totals.get(variant.label) ?? { rows: 0, ms: 0 }
    totals.set(variant.label, { rows: total.rows + rowsPerRound, ms: total.ms + ms })
    roundRates.set(variant.label, rowsPerRound / ms)
  }
  roundRatios.push(roundRates.get(dbs[0]!.label)! / roundRates.get(dbs[1]!.label)!)
}
const rates = [...totals].map(([label, { rows, ms }]) => ({ label, rate: (rows / ms) * 1000 }))
for (const { label, rate } of rates) console.log(`${label.padEnd(20)} ${rate.toFixed(0)} rows/s`)
console.log(`ratio with / without: ${(rates[0]!.rate / rates[1]!.rate).toFixed(3)} overall; per round ${roundRatios.map((r) => r.toFixed(2)).join(' ')}, median ${median(roundRatios).toFixed(3)}`)
for (const variant of dbs) {
  await variant.db.close()
  await variant.drop()
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}
