// The summary's rollups under concurrent writers and concurrent folds: on PostgreSQL two server
// processes take deliveries and moves while both fold every 10 ms (one at a time by their lock), and
// a transaction of this test holds a conversion uncommitted through the first second of it; on PGlite the app in the
// test process. At the end the summary equals the rows, and once everything is folded every level
// of the rollups holds each conversion exactly once, in its final state.
import pg from 'pg'
import t from 'tap'
import { createSheet } from '../../src/sheets.ts'
import { foldAll } from '../../src/rollups.ts'
import { listen, newPostgresDatabase, onPostgres, testApp, uniqueId } from '../helpers.ts'
import { twoInstances } from '../processes.ts'
import { loadConfig } from '../../src/config.ts'
import { openDatabase, type PrismaClient } from '../../src/database.ts'
import { createApiKey } from '../../src/api-keys.ts'

const LOOPS = 10
const ROUNDS = onPostgres ? 60 : 25
const FAST = { RECEIVER_RATE_LIMIT: '10000000', RECEIVER_FLOOD_LIMIT: '10000000', MANAGEMENT_RATE_LIMIT: '10000000', ROLLUP_FOLD_INTERVAL_MS: '10' }

t.test(`folds racing ${onPostgres ? 'two instances' : 'an instance'} taking deliveries and moves lose and repeat nothing`, async (t) => {
  const sheet = uniqueId('fold')
  let servers: Array<{ url: string }>
  let read: <Row>(sql: string, params: unknown[]) => Promise<Row[]>
  let apiKey: string
  let held: pg.Client | undefined
  let warnings = (): string[] => []
  let prisma: PrismaClient
  if (onPostgres) {
    // A database of its own: its servers fold every 10 ms whatever waits in their database, and in
    // the shared one they folded what the summary tests running beside them (another test process)
    // had imported to fold step by step themselves.
    const url = await newPostgresDatabase(t, {}, { migrated: true })
    const env = { DATABASE_URL: url, ...FAST }
    ;({ apiKey, servers, read, warnings } = await twoInstances(t, env, sheet))
    // A conversion written by a transaction that stays open while the others commit and fold.
    held = new pg.Client({ connectionString: url })
    await held.connect()
    t.teardown(() => held?.end())
    await held.query('BEGIN')
    await held.query(`INSERT INTO conversions (sheet_id, transaction_id, payout, currency, campaign_id) VALUES ($1, 'held', 4.5, 'USD', 'c0')`, [sheet])
    const store = await openDatabase(loadConfig({ DATABASE_URL: url }))
    t.teardown(() => store.close())
    prisma = store.prisma
  } else {
    const app = await testApp(t, FAST)
    await createSheet(app.prisma, { sheetId: sheet, currency: 'USD' })
    apiKey = (await createApiKey(app.prisma, { sheetIds: [sheet] })).key
    servers = [{ url: await listen(app) }]
    read = (sql, params) => app.db.withSession((session) => session.query(sql, params))
    prisma = app.prisma
  }

  // A 503 (storage busy: on a loaded CI machine a connection or a statement can time out) is retried
  // as a network retries it; what the servers logged about it is shown below.
  let unavailable = 0
  const deliver = async (url: string, query: Record<string, string>): Promise<number> => {
    for (let attempt = 0; ; attempt++) {
      const response = await fetch(`${url}/meta/postback/conversion?${new URLSearchParams({ sheet_id: sheet, ...query })}`)
      await response.arrayBuffer()
      if (response.status !== 503 || attempt === 5) return response.status
      unavailable++
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  const stored: string[] = []
  let sequence = 0
  const statuses: number[] = []
  // The held transaction ends a second into the load: folds before it must stop below it (it would
  // be missing from the rollups otherwise), folds after it take it in.
  const release = held && new Promise<void>((resolve) => setTimeout(() => held!.query('COMMIT').then(() => resolve(), () => resolve()), 1000))
  await Promise.all(
    Array.from({ length: LOOPS }, async (_, loop) => {
      for (let round = 0; round < ROUNDS; round++) {
        if (stored.length > 0 && Math.random() < 0.3) {
          const id = stored[Math.floor(Math.random() * stored.length)]!
          const status = Math.random() < 0.5 ? 'approved' : 'rejected'
          statuses.push(...(await Promise.all(servers.map((server) => deliver(server.url, { transaction_id: id, status, payout: '2.75' })))))
        } else {
          const id = `t-${sequence++}`
          const query = { transaction_id: id, status: Math.random() < 0.5 ? 'pending' : 'approved', payout: `1.${loop}5`, campaign_id: `c${loop % 3}`, currency: loop % 2 ? 'EUR' : 'USD' }
          const status = await deliver(servers[loop % servers.length]!.url, query)
          statuses.push(status)
          if (status === 200) stored.push(id)
        }
      }
    }),
  )
  if (unavailable > 0) t.comment(`${unavailable} deliveries answered 503 and retried; the servers logged:\n${warnings().join('\n')}`)
  t.same([...new Set(statuses)], [200], `every delivery answered 200 (${statuses.length})`, { warnings: warnings() })
  await release

  const fromRows = async () =>
    (
      await read<{ campaign_id: string; currency: string; status: string; n: number; revenue: string }>(
        `SELECT campaign_id, currency::text AS currency, status, count(*)::int AS n, COALESCE(sum(payout), 0)::text AS revenue
         FROM conversions WHERE sheet_id = $1 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
        [sheet],
      )
    ).map((row) => `${row.campaign_id} ${row.currency} ${row.status} ${row.n} ${Number(row.revenue).toFixed(2)}`)
  const expected = await fromRows()
  t.ok(expected.length > 4, `conversions in ${expected.length} groups`)

  const response = await fetch(`${servers[0]!.url}/api/v1/postback/summary?sheet_id=${sheet}&group_by=campaign`, {
    headers: { authorization: `Bearer ${apiKey}` },
  })
  const summary = ((await response.json()) as { data: Array<Record<string, string | number>> }).data
  const fromSummary = summary
    .flatMap((row) =>
      (['approved', 'pending', 'rejected'] as const).map((status) => {
        const prefix = status === 'approved' ? '' : `${status}_`
        return { status, n: Number(row[`${prefix}conversions`]), text: `${row.campaign_id} ${row.currency} ${status} ${row[`${prefix}conversions`]} ${Number(row[`${prefix}revenue`]).toFixed(2)}` }
      }),
    )
    .filter((entry) => entry.n > 0)
    .map((entry) => entry.text)
    .sort()
  t.same(fromSummary, [...expected].sort(), 'the summary equals the rows')

  // Everything folded (other tests' transactions on the server may hold the horizon back a while):
  // every level holds each conversion once, in its final state.
  const deadline = Date.now() + 60_000
  for (;;) {
    await foldAll(prisma)
    const [state] = await read<{ done: boolean }>(
      `SELECT coalesce(max(greatest(c.stored_key, coalesce(c.change_key, c.stored_key))) < (SELECT watermark FROM rollup_state), true) AS done
       FROM conversions c WHERE c.sheet_id = $1`,
      [sheet],
    )
    if (state?.done || Date.now() > deadline) break
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
  for (const level of [15, 60, 360, 1440]) {
    const rows = await read<{ campaign_id: string; currency: string; status: string; n: number; revenue: string }>(
      `SELECT campaign_id, currency, s.status, sum(s.n)::int AS n, sum(s.revenue)::text AS revenue
       FROM conversion_rollups r
       CROSS JOIN LATERAL (VALUES ('approved', r.approved, r.approved_revenue), ('pending', r.pending, r.pending_revenue), ('rejected', r.rejected, r.rejected_revenue)) AS s(status, n, revenue)
       WHERE r.sheet_id = $1 AND r.level = $2 AND r.phase = 0
       GROUP BY 1, 2, 3 HAVING sum(s.n) <> 0 OR sum(s.revenue) <> 0 ORDER BY 1, 2, 3`,
      [sheet, level],
    )
    t.same(rows.map((row) => `${row.campaign_id} ${row.currency} ${row.status} ${row.n} ${Number(row.revenue).toFixed(2)}`), expected, `the ${level}-minute rollups hold every conversion once`)
  }
})
