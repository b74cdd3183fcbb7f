// The summary shapes of bench/scale.ts timed in process (statement and Prisma's decoding, no HTTP),
// median of 5 after one, on a database that bench/scale.ts --keep left; folds what waits first.
//   npx tsx bench/time-summary.ts postgresql://postgres@127.0.0.1:5432/bench_scale_...
import { loadConfig } from '../src/config.ts'
import { openDatabase } from '../src/database.ts'
import { summarize } from '../src/conversions.ts'
import { foldAll } from '../src/rollups.ts'
const db = await openDatabase(loadConfig({ DATABASE_URL: process.argv[2] }))
console.log('folded', await foldAll(db.prisma))
const shapes: any[] = [
  { sheet_id: 'busy', group_by: 'ad', interval: 'day', tz: 'Asia/Kolkata', from: '2026-09-01T00:00:00+05:30', to: '2026-10-01T00:00:00+05:30' },
  { sheet_id: 'busy', group_by: 'campaign', interval: 'day', tz: 'Asia/Kathmandu', from: '2026-09-01T00:00:00+05:45', to: '2026-10-01T00:00:00+05:45' },
  { sheet_id: 'busy', group_by: 'campaign' },
]
for (const q of shapes) {
  const times: number[] = []
  let n = 0
  for (let i = 0; i < 6; i++) { const t0 = performance.now(); n = (await summarize(db, null, q)).length; times.push(performance.now() - t0) }
  console.log(q.group_by, q.tz ?? '', n, 'rows', times.slice(1).sort((a, b) => a - b)[2]!.toFixed(1), 'ms median')
}
await db.close()
