// What the change feed's key costs the receiver's statement on PostgreSQL: the batch statement of
// src/conversion-batch.ts writing new conversions (50 a statement, 4 statements in flight) into two
// fresh databases, one migrated as is and one without the feed's key and index (the table as it was
// before the feed), in alternating rounds. Prints rows/s and the ratio.
//   npx tsx bench/feed-cost.ts [--rounds 6] [--rows 20000]
import { parseArgs } from 'node:util'
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { alternatingRounds, scratchDatabase, writeNewConversions } from './support.ts'

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
let sequence = 0
await alternatingRounds([dbs[0]!, dbs[1]!], rounds, rowsPerRound, (variant) =>
  writeNewConversions(variant.db, rowsPerRound, () => ({ sheet_id: 'bench', transaction_id: `t${sequence++}`, payout: '1.50' })),
)
for (const variant of dbs) {
  await variant.db.close()
  await variant.drop()
}
