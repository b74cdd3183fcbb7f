// What an index per list filter would cost the receiver: the batch statement (new conversions, 50
// a statement, 4 in flight) into two databases of 10^6 conversions, one with the schema's indexes and
// one with six more, (sheet_id, <filter>, received_at DESC, id DESC) for currency, status,
// campaign_id, adset_id, ad_id and event, in alternating rounds.
//   npx tsx bench/index-cost.ts [--rows 1000000] [--rounds 6]
import { parseArgs } from 'node:util'
import pg from 'pg'
import { run } from '../src/cli.ts'
import { loadConfig } from '../src/config.ts'
import { openDatabase, type Database } from '../src/database.ts'
import { alternatingRounds, scratchDatabase, writeNewConversions } from './support.ts'

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '6' } } })
const FILTERS = ['currency', 'status', 'campaign_id', 'adset_id', 'ad_id', 'event']
const quiet = { stdout: { write: () => true }, stderr: { write: () => true } }
const variants: Array<{ label: string; db: Database; drop: () => Promise<void> }> = []
for (const indexed of [true, false]) {
  const scratch = await scratchDatabase('postgresql://postgres@127.0.0.1:5432/postgres', `index_cost_${indexed ? 'indexed' : 'plain'}_${Date.now()}`)
  const env = { DATABASE_URL: scratch.url, LOG_LEVEL: 'silent' }
  await run(['migrate'], env, quiet)
  await run(['sheet', 'create', '--id', 'busy'], env, quiet)
  const client = new pg.Client({ connectionString: scratch.url })
  await client.connect()
  await client.query(
    `INSERT INTO conversions (sheet_id, transaction_id, payout, currency, status, received_at, campaign_id, adset_id, ad_id)
     SELECT 'busy', 'f' || i, (i % 5000) / 100.0, CASE WHEN i % 7 = 0 THEN 'EUR' ELSE 'USD' END, 'approved', now() - make_interval(secs => i),
       'c' || i % 10, 's' || i % 50, 'a' || i % 300
     FROM generate_series(1, $1::int) i`,
    [Number(values.rows)],
  )
  if (indexed) for (const column of FILTERS) await client.query(`CREATE INDEX ON conversions (sheet_id, ${column}, received_at DESC, id DESC)`)
  await client.query('VACUUM ANALYZE conversions')
  await client.end()
  variants.push({ label: indexed ? 'six filter indexes' : 'the schema as it is', db: await openDatabase(loadConfig(env)), drop: scratch.drop })
}
let n = 0
await alternatingRounds([variants[0]!, variants[1]!], Number(values.rounds), 20_000, (variant) =>
  writeNewConversions(variant.db, 20_000, () => ({ sheet_id: 'busy', transaction_id: `n${n++}`, payout: '1.5', campaign_id: `c${n % 10}`, adset_id: `s${n % 50}`, ad_id: `a${n % 300}` })),
)
for (const variant of variants) {
  await variant.db.close()
  await variant.drop()
}
