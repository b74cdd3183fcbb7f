// Several instances. On PostgreSQL with Redis: two servers take the same deliveries concurrently and
// store one row per (sheet_id, transaction_id), and enforce one shared rate limit. The embedded
// store is one process's: a second instance on its folder is refused at start-up.
import { randomBytes } from 'node:crypto'
import t from 'tap'
import { admin, keysNotStoredOnce, onPostgres, pgliteCopy, uniqueId } from '../helpers.ts'
import { run, startServer } from '../processes.ts'

if (onPostgres) {
  t.test('two instances on one PostgreSQL and one Redis', async (t) => {
    const env = {
      DATABASE_URL: process.env.DATABASE_URL,
      REDIS_URL: 'redis://127.0.0.1:6379',
      REDIS_KEY_PREFIX: `postback-test:${randomBytes(6).toString('hex')}:`,
      RECEIVER_RATE_LIMIT: '150',
    }
    const sheet = uniqueId('instances')
    t.equal((await admin(env, 'sheet', 'create', '--id', sheet)).code, 0)
    const servers = [await startServer(env), await startServer(env)]
    for (const server of servers) t.teardown(() => server.child.kill('SIGKILL'))

    // 60 transactions, each sent to both instances at once, twice over: 240 requests.
    const ids = Array.from({ length: 60 }, (_, i) => `dup-${i}`)
    const responses = await Promise.all(
      [...ids, ...ids].flatMap((id) =>
        servers.map(async ({ url }) => {
          const response = await fetch(`${url}/meta/postback/conversion?sheet_id=${sheet}&transaction_id=${id}`)
          return { id, status: response.status, body: (await response.json()) as { status?: string; conversion_id?: string } }
        }),
      ),
    )
    const ok = responses.filter((r) => r.status === 200)
    t.equal(ok.length, 150, 'the shared limit lets 150 of the 240 through, whichever instance took them')
    t.same(new Set(responses.map((r) => r.status)), new Set([200, 429]))
    const { default: pg } = await import('pg')
    const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
    await client.connect()
    const { rows } = await client.query<{ transaction_id: string; n: number; id: string }>(
      'SELECT transaction_id, count(*)::int AS n, min(id)::text AS id FROM conversions WHERE sheet_id = $1 GROUP BY 1',
      [sheet],
    )
    await client.end()
    t.ok(rows.every((row) => row.n === 1), 'one row per (sheet_id, transaction_id)')
    t.equal(rows.length, new Set(ok.map((r) => r.id)).size, 'a row for every acknowledged transaction')
    // "One row" holds by the unique index alone; the answers show that the instances agree.
    const answers = ok.map((r) => ({ key: r.id, status: r.body.status! }))
    t.same(keysNotStoredOnce(answers), [], 'each acknowledged transaction: one stored answer, whichever instance gave it, the rest duplicate')
    const rowId = new Map(rows.map((row) => [row.transaction_id, row.id]))
    t.same(ok.filter((r) => r.body.conversion_id !== rowId.get(r.id)), [], "every answer's conversion_id is its row's id")
    for (const server of servers) server.child.kill('SIGTERM')
    for (const server of servers) t.equal((await server.child.output).code, 0)
  })
} else {
  t.test('a second instance on the embedded store is refused at start-up, naming the folder', async (t) => {
    const env = { DATABASE_URL: '', DATA_DIR: pgliteCopy(t) }
    const first = await startServer(env)
    t.teardown(() => first.child.kill('SIGKILL'))
    const second = await run(['--import=tsx', 'src/server.ts'], { ...env, PORT: '0' })
    t.equal(second.code, 1)
    t.match(second.stderr, `is in use by process ${first.child.pid}`)
    first.child.kill('SIGTERM')
    t.equal((await first.child.output).code, 0)
  })
}
