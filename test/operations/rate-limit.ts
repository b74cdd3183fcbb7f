// Rate limits: per sheet and client address plus a per-address flood limit on the receiver, per API
// key on the management API; 429 with Retry-After and the shared error body; x-ratelimit-* headers of
// the limit closest to being reached; client addresses from X-Forwarded-For only through a trusted
// proxy; Redis-shared counters, and no refusals (nor counts claimed) while Redis fails.
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import type { LightMyRequestResponse } from 'fastify'
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { LocalCounters } from '../../plugins/rate-limit.ts'
import { createSheet } from '../../src/sheets.ts'
import { newKeyHeader, newSheet, receiverUrl, testApp, testConfig } from '../helpers.ts'

const REDIS_URL = 'redis://127.0.0.1:6379'

/** The x-ratelimit-* headers of an answer as [limit, remaining], and the reset in seconds. */
function shownLimit(response: LightMyRequestResponse) {
  const { 'x-ratelimit-limit': limit, 'x-ratelimit-remaining': remaining, 'x-ratelimit-reset': reset } = response.headers
  return { limit: limit === undefined ? undefined : [Number(limit), Number(remaining)], reset: Number(reset) }
}

// One app for the tests of fixed limits (each testApp on PGlite costs a store's start-up): every
// test uses client addresses and sheets of its own, so no counter is shared between tests.
const LIMITS = { RECEIVER_RATE_LIMIT: 2, RECEIVER_FLOOD_LIMIT: 5, MANAGEMENT_RATE_LIMIT: 2 }
const app = await testApp(t, Object.fromEntries(Object.entries(LIMITS).map(([name, value]) => [name, String(value)])))
const deliverFrom = (remoteAddress: string, sheet: string, transactionId: string, headers: Record<string, string> = {}) =>
  app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: transactionId }), remoteAddress, headers })
const times = (n: number) => Array.from({ length: n }, (_, i) => i)

t.test('receiver: the limit is per sheet and client address', async (t) => {
  const [a, b] = [await newSheet(app), await newSheet(app)]
  for (const i of times(LIMITS.RECEIVER_RATE_LIMIT)) t.equal((await deliverFrom('198.51.100.1', a, `t${i}`)).statusCode, 200)
  const limited = await deliverFrom('198.51.100.1', a, 'over')
  t.equal(limited.statusCode, 429)
  t.match(limited.json(), { error: 'rate_limited', message: new RegExp(`${LIMITS.RECEIVER_RATE_LIMIT} requests per minute`) })
  t.ok(Number(limited.headers['retry-after']) >= 1, `Retry-After ${limited.headers['retry-after']}`)
  t.equal((await deliverFrom('198.51.100.1', b, 'other-sheet')).statusCode, 200, 'another sheet from the same address is not limited')
  t.equal((await deliverFrom('198.51.100.2', a, 'other-address')).statusCode, 200, 'the same sheet from another address is not limited')
  const [row] = await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${a}`
  t.equal(row?.n, LIMITS.RECEIVER_RATE_LIMIT + 1, 'the limited delivery was not stored')
})

t.test('receiver: a coarse per-address flood limit over all sheets', async (t) => {
  const sheets = await Promise.all(times(LIMITS.RECEIVER_FLOOD_LIMIT + 1).map(() => newSheet(app)))
  const statuses = []
  for (const sheet of sheets) statuses.push((await deliverFrom('203.0.113.7', sheet, 'x')).statusCode)
  t.same(statuses, [...times(LIMITS.RECEIVER_FLOOD_LIMIT).map(() => 200), 429])
})

t.test('receiver: a sheet_id that cannot name a sheet cannot make a counter of its own', async (t) => {
  const statuses = []
  for (const sheet of ['no such 1', 'no such 2', 'x'.repeat(5000)]) statuses.push((await deliverFrom('198.51.100.9', sheet, 't')).statusCode)
  t.same(statuses, [404, 404, 429], 'invalid sheet ids share one counter per address')
})

t.test('receiver: an IPv6 client counts by its /64', async (t) => {
  const sheet = await newSheet(app)
  const statuses = []
  for (const address of ['2001:db8:1:2::1', '2001:db8:1:2::ffff', '2001:db8:1:2:abcd::9', '2001:db8:1:3::1']) {
    statuses.push((await deliverFrom(address, sheet, address)).statusCode)
  }
  t.same(statuses, [200, 200, 429, 200])
})

t.test('throttled deliveries are counted, not kept in the rejection log', async (t) => {
  const sheet = await newSheet(app)
  const throttled = async () => Number(/^postback_rate_limited_total\{limit="receiver_sheet"\} (\d+)/m.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0)
  const before = await throttled()
  for (const id of ['a', 'b', 'c', 'd']) await deliverFrom('198.51.100.20', sheet, id)
  await app.deliveryLog.flush()
  t.same(await app.prisma.deliveryRejection.findMany({ where: { sheetId: sheet } }), [])
  t.equal((await throttled()) - before, 2, 'two deliveries over the limit of 2, counted')
})

t.test('management: guessing keys is limited per address before authentication', async (t) => {
  const statuses = []
  for (const i of times(LIMITS.RECEIVER_FLOOD_LIMIT + 1)) {
    const response = await app.inject({ method: 'GET', url: '/api/v1/postback/conversions', headers: { authorization: `Bearer pbk_${String(i).repeat(43)}` }, remoteAddress: '192.0.2.50' })
    statuses.push(response.statusCode)
  }
  t.same(statuses, [...times(LIMITS.RECEIVER_FLOOD_LIMIT).map(() => 401), 429])
})

t.test('management: the limit is per API key', async (t) => {
  const [first, second] = [await newKeyHeader(app, { global: true }), await newKeyHeader(app, { global: true })]
  const list = (headers: Record<string, string>) => app.inject({ method: 'GET', url: '/api/v1/postback/conversions?limit=1', headers, remoteAddress: '192.0.2.60' })
  t.same([(await list(first)).statusCode, (await list(first)).statusCode], [200, 200])
  const limited = await list(first)
  t.same([limited.statusCode, limited.json().error], [429, 'rate_limited'])
  t.ok(limited.headers['retry-after'])
  t.equal((await list(second)).statusCode, 200, 'another key has its own limit')
})

t.test('client addresses: X-Forwarded-For counts only from a trusted proxy', async (t) => {
  const clients = ['192.0.2.10', '192.0.2.11', '192.0.2.12']
  // Untrusted (the shared app has no TRUST_PROXY): every request is the proxy's address, so the
  // third is over the limit of 2.
  const sheet = await newSheet(app)
  const untrusted = []
  for (const client of clients) untrusted.push((await deliverFrom('10.0.0.1', sheet, client, { 'x-forwarded-for': client })).statusCode)
  t.same(untrusted, [200, 200, 429], 'TRUST_PROXY unset')

  const trusting = await testApp(t, { RECEIVER_RATE_LIMIT: '1', TRUST_PROXY: '10.0.0.1' })
  const other = await newSheet(trusting)
  const trusted = []
  for (const client of clients) {
    const response = await trusting.inject({ method: 'GET', url: receiverUrl({ sheet_id: other, transaction_id: client }), remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': client } })
    trusted.push(response.statusCode)
  }
  t.same(trusted, [200, 200, 200], 'TRUST_PROXY=10.0.0.1: each client its own counter, even at a limit of 1')
})

t.test('with REDIS_URL, two instances share one limit', async (t) => {
  const prefix = `postback-test:${randomBytes(6).toString('hex')}:`
  const settings = { REDIS_URL, REDIS_KEY_PREFIX: prefix, RECEIVER_RATE_LIMIT: '4' }
  const instances = [await testApp(t, settings), await testApp(t, settings)]
  // On PGlite each instance has its own store: the sheet is created in both (on PostgreSQL, once).
  const sheet = await newSheet(instances[0]!)
  if (!instances[0]!.config.DATABASE_URL) await createSheet(instances[1]!.prisma, { sheetId: sheet })
  const statuses = []
  for (let i = 0; i < 6; i++) {
    const app = instances[i % 2]!
    statuses.push((await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `s${i}` }), remoteAddress: '192.0.2.99' })).statusCode)
  }
  t.same(statuses, [200, 200, 200, 200, 429, 429], 'the fifth request, on either instance, is over the shared limit')
})

t.test('when Redis is unreachable, requests are let through, logged and counted', async (t) => {
  const app = await testApp(t, { REDIS_URL: 'redis://127.0.0.1:1', RECEIVER_RATE_LIMIT: '1' })
  const sheet = await newSheet(app)
  const answers = []
  for (let i = 0; i < 3; i++) answers.push(await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `r${i}` }) }))
  t.same(answers.map((response) => response.statusCode), [200, 200, 200], 'no request refused because the limit store is down')
  t.same(answers.map((response) => shownLimit(response).limit), [undefined, undefined, undefined], 'no x-ratelimit-* headers: nothing was counted')
  const metrics = await app.inject({ method: 'GET', url: '/metrics' })
  const errors = Number(/^postback_rate_limit_store_errors_total (\d+)/m.exec(metrics.body)?.[1])
  t.ok(errors >= 6, `${errors} store errors counted (two limits per request)`)
})

// Counted in the instance's memory and in Redis: two implementations, one behaviour.
for (const [store, settings] of [
  ['in memory', {}],
  ['in Redis', { REDIS_URL, REDIS_KEY_PREFIX: `postback-test:${randomBytes(6).toString('hex')}:` }],
] as const) {
  t.test(`receiver: x-ratelimit-* headers show the limit closest to being reached (counted ${store})`, async (t) => {
    const app = await testApp(t, { RECEIVER_FLOOD_LIMIT: '4', RECEIVER_RATE_LIMIT: '3', ...settings })
    const [a, b] = [await newSheet(app), await newSheet(app)]
    const send = (sheet: string, id: string) => app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: id }), remoteAddress: '198.51.100.20' })
    const answers = [await send(a, '1'), await send(a, '2'), await send(b, '3'), await send(b, '4'), await send(b, '5')]
    t.same(
      answers.map((response) => [response.statusCode, shownLimit(response).limit]),
      [
        [200, [3, 2]], // sheet a: 2 of 3 left; address: 3 of 4
        [200, [3, 1]],
        [200, [4, 1]], // sheet b: 2 of 3 left; address: 1 of 4
        [200, [4, 0]],
        [429, [4, 0]], // over the address limit
      ],
    )
    for (const response of answers) {
      const { reset } = shownLimit(response)
      t.ok(reset >= 1 && reset <= 60, `x-ratelimit-reset ${reset} s, within the minute`)
    }
    t.equal(answers[4]!.headers['retry-after'], answers[4]!.headers['x-ratelimit-reset'], 'Retry-After is the reset of the limit that refused')
  })
}

t.test('in-memory counters: a window per key from its first request; beyond capacity the key used longest ago goes, never one in use', async (t) => {
  const counters = new LocalCounters(3)
  const start = 1_000_000
  t.same(counters.count('a', 2, start), { max: 2, remaining: 1, ttlInSeconds: 60, isExceeded: false })
  t.same(counters.count('a', 2, start + 30_500), { max: 2, remaining: 0, ttlInSeconds: 30, isExceeded: false }, 'the same window, half a minute later')
  t.same(counters.count('a', 2, start + 59_999), { max: 2, remaining: 0, ttlInSeconds: 1, isExceeded: true }, 'over the limit within the window')
  t.same(counters.count('a', 2, start + 60_000), { max: 2, remaining: 1, ttlInSeconds: 60, isExceeded: false }, 'a new window once the minute is over')
  counters.count('b', 2, start + 60_000)
  counters.count('c', 2, start + 60_000)
  counters.count('a', 2, start + 60_000)
  t.equal(counters.size, 3, 'a key counted again takes no room of another')
  counters.count('d', 2, start + 60_001)
  t.equal(counters.size, 3, 'no more keys than the capacity')
  t.equal(counters.count('b', 2, start + 60_002).remaining, 1, 'the key used longest ago (b) was dropped: counted anew')
  t.ok(counters.count('a', 2, start + 60_002).isExceeded, 'a, used since, was kept: its third request in the window is over the limit')
  // A client making a new key with every request (a new sheet id) while one key of its own counts on.
  const flooded = new LocalCounters(3)
  for (let request = 1; request <= 20; request++) {
    flooded.count(`sheet-${request}`, 100, start)
    t.equal(flooded.count('address', 100, start).remaining, 100 - request, `request ${request}: the address's count goes on`)
  }
  flooded.count('x', 2, start + 61_000)
  t.equal(flooded.size, 1, 'ended windows are dropped when room is made')
})

t.test('management: x-ratelimit-* headers over the per-address limit and the per-key limit', async (t) => {
  const app = await testApp(t, { RECEIVER_FLOOD_LIMIT: '4', MANAGEMENT_RATE_LIMIT: '3' })
  const [first, second] = [await newKeyHeader(app, { global: true }), await newKeyHeader(app, { global: true })]
  const list = (headers: Record<string, string>, remoteAddress: string) =>
    app.inject({ method: 'GET', url: '/api/v1/postback/conversions?limit=1', headers, remoteAddress })
  const rows = (answers: LightMyRequestResponse[]) => answers.map((response) => [response.statusCode, shownLimit(response).limit])

  // From a fresh address the per-key limit (3) is closer than the per-address one (4).
  const byKey = [await list(first, '192.0.2.60'), await list(first, '192.0.2.60'), await list(first, '192.0.2.60'), await list(first, '192.0.2.60')]
  t.same(rows(byKey), [[200, [3, 2]], [200, [3, 1]], [200, [3, 0]], [429, [3, 0]]], 'the per-key limit')
  t.equal(byKey[3]!.headers['retry-after'], byKey[3]!.headers['x-ratelimit-reset'])

  // Two unauthenticated answers (counted per address only), then the per-address limit is the closer
  // one: checked in the first hook, it is not overwritten by the per-key hook's count.
  const unknown = { authorization: `Bearer pbk_${'x'.repeat(43)}` }
  const byAddress = [await list(unknown, '192.0.2.61'), await list(unknown, '192.0.2.61'), await list(second, '192.0.2.61'), await list(second, '192.0.2.61'), await list(second, '192.0.2.61')]
  t.same(rows(byAddress), [[401, [4, 3]], [401, [4, 2]], [200, [4, 1]], [200, [4, 0]], [429, [4, 0]]], 'the per-address limit')
})

/** A TCP proxy to the test Redis that can be cut off and restored, to fail Redis under a running app. */
async function redisProxy(t: { teardown(fn: () => unknown): void }) {
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let port = 0
  async function up() {
    server = createServer((client) => {
      const upstream = connect(6379, '127.0.0.1')
      for (const socket of [client, upstream]) {
        sockets.add(socket)
        socket.on('error', () => socket.destroy())
        socket.on('close', () => {
          sockets.delete(socket)
          client.destroy()
          upstream.destroy()
        })
      }
      client.pipe(upstream).pipe(client)
    })
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    port = (server.address() as { port: number }).port
  }
  async function down() {
    const closed = new Promise((resolve) => server?.close(resolve))
    for (const socket of sockets) socket.destroy()
    await closed
  }
  await up()
  t.teardown(down)
  return { url: () => `redis://127.0.0.1:${port}`, up, down }
}

t.test('Redis failing under a running app: requests let through and counted without headers, limits again once it is back', async (t) => {
  const proxy = await redisProxy(t)
  const lines: string[] = []
  const logger = {
    level: 'info',
    stream: new Writable({
      write: (chunk, _encoding, done) => {
        lines.push(String(chunk))
        done()
      },
    }),
  }
  const config = testConfig(t, { REDIS_URL: proxy.url(), REDIS_KEY_PREFIX: `postback-test:${randomBytes(6).toString('hex')}:`, RECEIVER_RATE_LIMIT: '2' })
  const app = await buildApp(config, { logger })
  t.teardown(() => app.close())
  await app.ready()
  const sheet = await newSheet(app)
  const send = (id: string) => app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: id }), remoteAddress: '192.0.2.70' })
  const storeErrors = async () => Number(/^postback_rate_limit_store_errors_total (\d+)/m.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1])

  const first = await send('before')
  t.same([first.statusCode, shownLimit(first).limit], [200, [2, 1]], 'counted in Redis')
  t.equal(await storeErrors(), 0)

  await proxy.down()
  const during = [await send('during-1'), await send('during-2'), await send('during-3')]
  t.same(during.map((response) => response.statusCode), [200, 200, 200], 'let through while Redis is away')
  t.same(during.map((response) => shownLimit(response).limit), [undefined, undefined, undefined], 'no headers claim a count that was not made')
  t.equal(await storeErrors(), 6, 'each failed check counted (two limits per request)')
  t.ok(lines.some((line) => line.includes('rate-limit store (Redis) unavailable')), 'a warning logged')

  await proxy.up()
  const deadline = Date.now() + 10_000
  while (!lines.some((line) => line.includes('rate-limit store (Redis) reachable again')) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))
  t.ok(lines.some((line) => line.includes('rate-limit store (Redis) reachable again')), 'the recovery logged')
  const after = [await send('after-1'), await send('after-2')]
  t.same(
    after.map((response) => [response.statusCode, shownLimit(response).limit]),
    [
      [200, [2, 0]], // the count made before the outage still holds
      [429, [2, 0]],
    ],
    'limits apply again',
  )
})
