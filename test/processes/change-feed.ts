// The change feed under concurrent writers, followed through the client's followChanges while the
// deliveries arrive: on PostgreSQL two server processes take them (several statements in flight on
// each, and moves of one conversion sent to both at once); on PGlite the app in the test process. The follower must
// end with every stored conversion and every applied move, each once, a conversion's `stored` first.
import t from 'tap'
import { createClient, followChanges, type Change } from '../../client/src/index.ts'
import { createApiKey } from '../../src/api-keys.ts'
import { createSheet } from '../../src/sheets.ts'
import { listen, onPostgres, testApp, uniqueId } from '../helpers.ts'
import { twoInstances } from '../processes.ts'

// Deliveries per loop, not a duration, so that a loaded machine still makes moves race: 12 loops at
// once (on PostgreSQL each instance several statements in flight); the embedded store writes one
// statement at a time in one process, so fewer there.
const LOOPS = 12
const ROUNDS = onPostgres ? 80 : 25

t.test(`the feed misses nothing and repeats nothing while ${onPostgres ? 'two instances take' : 'an instance takes'} deliveries and moves`, async (t) => {
  const sheet = uniqueId('feed')
  let apiKey: string
  let servers: Array<{ url: string }>
  // What is stored, read beside the servers: the test's own connection, or the in-process app's store.
  let read: <Row>(sql: string, params: unknown[]) => Promise<Row[]>
  if (onPostgres) {
    const env = { DATABASE_URL: process.env.DATABASE_URL, RECEIVER_RATE_LIMIT: '10000000', RECEIVER_FLOOD_LIMIT: '10000000', MANAGEMENT_RATE_LIMIT: '10000000' }
    ;({ apiKey, servers, read } = await twoInstances(t, env, sheet))
  } else {
    // The embedded store is one process's: the app in this one.
    const app = await testApp(t, { RECEIVER_RATE_LIMIT: '10000000', RECEIVER_FLOOD_LIMIT: '10000000', MANAGEMENT_RATE_LIMIT: '10000000' })
    await createSheet(app.prisma, { sheetId: sheet, currency: 'USD' })
    apiKey = (await createApiKey(app.prisma, { sheetIds: [sheet] })).key
    servers = [{ url: await listen(app) }]
    read = (sql, params) => app.db.withSession((session) => session.query(sql, params))
  }

  const seen: Change[] = []
  const stop = new AbortController()
  const follower = (async () => {
    const client = createClient({ baseUrl: servers.at(-1)!.url, apiKey })
    for await (const change of followChanges(client, { sheet_id: sheet, signal: stop.signal, wait: 1, limit: 50 })) seen.push(change)
  })()

  // New conversions (pending or approved) to either instance; moves of stored ones to every instance at once.
  const stored: string[] = []
  let sequence = 0
  const deliver = (url: string, query: Record<string, string>) =>
    fetch(`${url}/meta/postback/conversion?${new URLSearchParams({ sheet_id: sheet, ...query })}`).then(async (response) => {
      await response.arrayBuffer()
      return response.status
    })
  const statuses: number[] = []
  const loops = Array.from({ length: LOOPS }, async (_, loop) => {
    for (let round = 0; round < ROUNDS; round++) {
      const url = servers[loop % servers.length]!.url
      if (stored.length > 0 && Math.random() < 0.3) {
        const id = stored[Math.floor(Math.random() * stored.length)]!
        const status = Math.random() < 0.5 ? 'approved' : 'rejected'
        statuses.push(...(await Promise.all(servers.map((server) => deliver(server.url, { transaction_id: id, status })))))
      } else {
        const id = `t-${sequence++}`
        const status = await deliver(url, { transaction_id: id, status: Math.random() < 0.5 ? 'pending' : 'approved', payout: '1.25' })
        statuses.push(status)
        if (status === 200) stored.push(id)
      }
    }
  })
  await Promise.all(loops)
  t.same([...new Set(statuses)], [200], `every delivery answered 200 (${statuses.length} deliveries)`)

  const conversions = await read<{ id: string; status: string }>('SELECT id::text, status FROM conversions WHERE sheet_id = $1', [sheet])
  const moves = await read<{ id: string; status: string }>(
    // Every history entry but a conversion's first (its first state), not by the feed's own key.
    `SELECT h.conversion_id::text AS id, h.status FROM conversion_history h JOIN conversions c ON c.id = h.conversion_id
     WHERE c.sheet_id = $1 AND h.id > (SELECT min(f.id) FROM conversion_history f WHERE f.conversion_id = h.conversion_id) ORDER BY h.id`,
    [sheet],
  )
  const expected = { conversions: new Map(conversions.map((row) => [row.id, row.status])), moves: group(moves) }
  const moveCount = [...expected.moves.values()].reduce((sum, list) => sum + list.length, 0)
  t.equal(expected.conversions.size, stored.length, 'a row for every acknowledged conversion')
  t.ok(moveCount > 0, `moves were applied (${moveCount})`)

  const deadline = Date.now() + 30_000
  while (seen.length < expected.conversions.size + moveCount && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
  // Anything the follower would wrongly see twice comes now.
  await new Promise((resolve) => setTimeout(resolve, 1000))
  stop.abort()
  await follower

  const storedChanges = seen.filter((change) => change.kind === 'stored')
  t.equal(storedChanges.length, expected.conversions.size, 'one stored change per conversion')
  t.same(new Set(storedChanges.map((change) => change.conversion.id)), new Set(expected.conversions.keys()), 'for exactly the stored conversions')
  t.same(group(seen.filter((change) => change.kind === 'updated').map((change) => ({ id: change.conversion.id, status: change.conversion.status }))), expected.moves, 'every applied move once, in the order applied')
  t.equal(new Set(seen.map((change) => change.position)).size, seen.length, 'no position twice')
  const storedSeen = new Set<string>()
  const early: string[] = []
  for (const change of seen) {
    if (change.kind === 'stored') storedSeen.add(change.conversion.id)
    else if (!storedSeen.has(change.conversion.id)) early.push(change.position)
  }
  t.same(early, [], "a conversion's stored comes before its updates")
  const replayed = new Map<string, string>()
  for (const change of seen) replayed.set(change.conversion.id, change.conversion.status)
  t.same(replayed, expected.conversions, 'replaying the feed gives every conversion its stored status')
})

function group(rows: Array<{ id: string; status: string }>): Map<string, string[]> {
  const byId = new Map<string, string[]>()
  for (const { id, status } of rows) byId.set(id, [...(byId.get(id) ?? []), status])
  return byId
}
