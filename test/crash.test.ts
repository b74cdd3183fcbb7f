// Crash safety: after kill -9 under load, every delivery that got a 2xx is in the store after a
// restart (on the embedded store, the killed process's lock is taken over). The long version with
// several rounds is `npm run chaos`.
import t from 'tap'
import { onPostgres, pgliteCopy, uniqueId } from './helpers.ts'
import { loadGenerator, run, startServer } from './processes.ts'

t.test('kill -9 under load loses no acknowledged delivery', async (t) => {
  const env = onPostgres ? { DATABASE_URL: process.env.DATABASE_URL } : { DATABASE_URL: '', DATA_DIR: pgliteCopy(t) }
  const sheet = uniqueId('crash')
  t.equal((await run(['bin/postback-admin.js', 'sheet', 'create', '--id', sheet], env)).code, 0)
  const created = await run(['bin/postback-admin.js', 'key', 'create', '--sheet', sheet], env)
  const authorization = `Bearer ${JSON.parse(created.stdout.trim().split('\n').at(-1)!).key}`

  const first = await startServer(env)
  t.teardown(() => first.child.kill('SIGKILL'))
  const load = loadGenerator(first.url, sheet, 20, 'k')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  first.child.kill('SIGKILL')
  await first.child.output
  await load.stop()
  t.ok(load.acknowledged.length > 0, `${load.acknowledged.length} deliveries acknowledged before the kill (${JSON.stringify([...load.statuses])})`)

  const restarted = await startServer(env)
  t.teardown(() => restarted.child.kill('SIGKILL'))
  const stored = new Set<string>()
  let cursor: string | null = null
  do {
    const response = await fetch(`${restarted.url}/api/v1/postback/conversions?sheet_id=${sheet}&limit=500${cursor ? `&cursor=${cursor}` : ''}`, { headers: { authorization } })
    const page = (await response.json()) as { data: Array<{ transaction_id: string }>; next_cursor: string | null }
    for (const row of page.data) stored.add(row.transaction_id)
    cursor = page.next_cursor
  } while (cursor)
  const missing = load.acknowledged.filter((id) => !stored.has(id))
  t.same(missing, [], `all ${load.acknowledged.length} acknowledged deliveries are stored (${stored.size} rows)`)
  restarted.child.kill('SIGTERM')
  t.equal((await restarted.child.output).code, 0)
})
