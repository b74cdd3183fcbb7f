// EXPLAIN (ANALYZE, BUFFERS) of the summary's statement for ad x day over 30 days in Asia/Kolkata,
// on a database that bench/scale.ts --keep left: the app's own statement, caught on its way to the
// database (the zone list and the watermark reads pass through).
//   npx tsx bench/explain-summary.ts postgresql://postgres@127.0.0.1:5432/bench_scale_...
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { Prisma } from '../src/generated/prisma/client.ts'
const db = await openDatabase(loadConfig({ DATABASE_URL: process.argv[2] }))
const orig = db.prisma.$queryRaw.bind(db.prisma)
;(db.prisma as any).$queryRaw = async (sql: Prisma.Sql, ...rest: unknown[]) => {
  if (!(sql instanceof Prisma.Sql)) return (orig as any)(sql, ...rest)
  const rows = await orig(Prisma.sql`EXPLAIN (ANALYZE, BUFFERS) ${sql}`)
  console.log((rows as any[]).map((r) => r['QUERY PLAN']).join('\n'))
  return []
}
const { summarize } = await import('../src/conversions.ts')
await summarize(db.prisma, null, (process.argv[3] ? JSON.parse(process.argv[3]) : { sheet_id: 'busy', group_by: 'ad', interval: 'day', tz: 'Asia/Kolkata', from: '2026-09-01T00:00:00+05:30', to: '2026-10-01T00:00:00+05:30' }) as any)
await db.close()
