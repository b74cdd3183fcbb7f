// EXPLAIN (ANALYZE, BUFFERS) of the summary's statement for ad x day over 30 days in Asia/Kolkata,
// on a database that bench/scale.ts --keep left: the app's own statement, caught on its way to the
// database (the zone list and the watermark reads pass through).
//   npx tsx bench/explain-summary.ts postgresql://postgres@127.0.0.1:5432/bench_scale_...
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
const db = await openDatabase(loadConfig({ DATABASE_URL: process.argv[2] }))
const orig = db.query.bind(db)
db.query = async <Row>(statement: { text: string; values: unknown[] }): Promise<Row[]> => {
  if (!statement.text.includes('WITH st AS')) return orig<Row>(statement)
  const rows = await orig<Record<string, string>>({ ...statement, text: `EXPLAIN (ANALYZE, BUFFERS) ${statement.text}` })
  console.log(rows.map((r) => r['QUERY PLAN']).join('\n'))
  return []
}
const { summarize } = await import('../src/conversions.ts')
await summarize(db, null, (process.argv[3] ? JSON.parse(process.argv[3]) : { sheet_id: 'busy', group_by: 'ad', interval: 'day', tz: 'Asia/Kolkata', from: '2026-09-01T00:00:00+05:30', to: '2026-10-01T00:00:00+05:30' }) as any)
await db.close()
