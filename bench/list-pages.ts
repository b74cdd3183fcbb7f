// List pages on a database that `npm run bench:scale -- --keep` filled (one busy sheet of 300 ads
// over 90 days, five small sheets): each list shape's time through the app's route (median of 7,
// after one unmeasured request), the first page and the 21st. It folds what bench:scale wrote last
// (its receiver rounds) first, as a running service would have. Run it on the kept database:
//   npx tsx bench/list-pages.ts --pg-url postgresql://postgres@127.0.0.1:5432/bench_scale_...
import { parseArgs } from 'node:util'
import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { foldAll } from '../src/rollups.ts'
import { LIST_SHAPES, managementReader, table } from './support.ts'

const { values } = parseArgs({ options: { 'pg-url': { type: 'string' }, rounds: { type: 'string', default: '7' } } })
if (!values['pg-url']) throw new Error('--pg-url of a database that bench:scale kept')
const app = await buildApp(loadConfig({ DATABASE_URL: values['pg-url'], LOG_LEVEL: 'silent', ROLLUP_FOLD_INTERVAL_MS: '3600000', MANAGEMENT_RATE_LIMIT: '100000000' }))
await app.ready()
await foldAll(app.prisma)
await app.db.withSession((session) => session.exec('ANALYZE'))
const reader = await managementReader(app)
const rounds = Number(values.rounds)
const timed = async (url: string) => {
  const { ms, body } = await reader.timed(url, rounds)
  return { ms, rows: (body as { data: unknown[] }).data.length }
}

const results = [['list', 'first page (ms)', 'rows', 'page 21 (ms)', 'rows']]
for (const [name, path] of LIST_SHAPES) {
  const url = `${path}${path.includes('?') ? '&' : '?'}limit=50`
  const first = await timed(url)
  const cursor = await reader.cursorAfter(url, 20)
  const deep = cursor ? await timed(`${url}&cursor=${cursor}`) : undefined
  results.push([name, first.ms.toFixed(1), String(first.rows), deep ? deep.ms.toFixed(1) : '-', deep ? String(deep.rows) : '-'])
  console.error(results.at(-1)!.join(' | '))
}
console.log(table(results))
await app.close()
