// List pages on a database that `npm run bench:scale -- --keep` filled (one busy sheet of 300 ads
// over 90 days, five small sheets): each list shape's time through the app's route (median of 7,
// after one unmeasured request), the first page and the 21st. Run it on the kept database:
//   npx tsx bench/list-pages.ts --pg-url postgresql://postgres@127.0.0.1:5432/bench_scale_...
import { parseArgs } from 'node:util'
import { buildApp } from '../src/app.ts'
import { createApiKey } from '../src/api-keys.ts'
import { loadConfig } from '../src/config.ts'
import { LIST_SHAPES, table } from './support.ts'

const { values } = parseArgs({ options: { 'pg-url': { type: 'string' }, rounds: { type: 'string', default: '7' } } })
if (!values['pg-url']) throw new Error('--pg-url of a database that bench:scale kept')
const app = await buildApp(loadConfig({ DATABASE_URL: values['pg-url'], LOG_LEVEL: 'silent', ROLLUP_FOLD_INTERVAL_MS: '3600000', MANAGEMENT_RATE_LIMIT: '100000000' }))
await app.ready()
const { key } = await createApiKey(app.prisma, { global: true })
const headers = { authorization: `Bearer ${key}` }
const rounds = Number(values.rounds)

/** The page's time in ms (median of `rounds`) and its rows. */
async function timed(url: string): Promise<{ ms: number; rows: number }> {
  const times: number[] = []
  let rows = 0
  for (let i = 0; i <= rounds; i++) {
    const started = performance.now()
    const response = await app.inject({ url: `/api/v1/postback${url}`, headers })
    if (response.statusCode !== 200) throw new Error(`${url}: ${response.statusCode} ${response.body}`)
    if (i > 0) times.push(performance.now() - started)
    rows = (response.json() as { data: unknown[] }).data.length
  }
  return { ms: times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!, rows }
}

async function cursorAfter(url: string, pages: number): Promise<string | null> {
  let cursor: string | null = null
  for (let page = 0; page < pages; page++) {
    const response: { json(): unknown } = await app.inject({ url: `/api/v1/postback${url}${cursor ? `&cursor=${cursor}` : ''}`, headers })
    cursor = (response.json() as { next_cursor: string | null }).next_cursor
    if (!cursor) return null
  }
  return cursor
}

const results = [['list', 'first page (ms)', 'rows', 'page 21 (ms)', 'rows']]
for (const [name, path] of LIST_SHAPES) {
  const url = `${path}${path.includes('?') ? '&' : '?'}limit=50`
  const first = await timed(url)
  const cursor = await cursorAfter(url, 20)
  const deep = cursor ? await timed(`${url}&cursor=${cursor}`) : undefined
  results.push([name, first.ms.toFixed(1), String(first.rows), deep ? deep.ms.toFixed(1) : '-', deep ? String(deep.rows) : '-'])
  console.error(results.at(-1)!.join(' | '))
}
console.log(table(results))
await app.close()
