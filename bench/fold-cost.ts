// What keeping the summary's rollups costs the receiver on PostgreSQL: the batch statement of
// src/conversion-batch.ts writing new conversions (50 a statement, 4 statements in flight, 300 ads)
// into two fresh databases in alternating rounds; in one, the background fold runs as in the service
// (every second) and the round ends only when every row it wrote is folded (so the round pays for
// all of its folding); the other is never folded. Prints rows/s and the ratio.
//   npx tsx bench/fold-cost.ts [--rounds 6] [--rows 30000]
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { foldAll, RollupFolder } from '../src/rollups.ts'
import { alternatingRounds, scratchDatabase, writeNewConversions } from './support.ts'

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
let sequence = 0
await alternatingRounds([dbs[0]!, dbs[1]!], rounds, rowsPerRound, async (variant) => {
  const folder = variant.fold ? new RollupFolder(variant.db.prisma, { intervalMs: 1000, onError: (error) => console.error(error) }) : undefined
  folder?.start()
  await writeNewConversions(variant.db, rowsPerRound, () => {
    sequence++
    return { sheet_id: 'bench', transaction_id: `t${sequence}`, payout: '1.50', campaign_id: `c${sequence % 10}`, ad_id: `a${sequence % 300}` }
  })
  if (folder) {
    await folder.stop()
    await foldAll(variant.db.prisma)
  }
})
for (const variant of dbs) {
  await variant.db.close()
  await variant.drop()
}
