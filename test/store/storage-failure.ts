// Storage trouble and overload turn into 503 with Retry-After, never a hang or an acknowledged loss.
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import { capturedLog, newSheet, receiverUrl, testApp, testConfig } from '../helpers.ts'

t.test('a database that does not answer: 503 storage_unavailable with Retry-After, readiness 503', async (t) => {
  // Nothing listens on port 1: the real pg driver fails to connect.
  const app = await buildApp(
    loadConfig({
      DATABASE_URL: 'postgresql://postgres@127.0.0.1:1/none',
      MIGRATE_ON_START: 'false',
      DB_CONNECT_TIMEOUT_MS: '500',
      RETRY_AFTER_SECONDS: '7',
      LOG_LEVEL: 'silent',
    }),
  )
  t.teardown(() => app.close())
  const started = Date.now()
  const response = await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: 's', transaction_id: 't' }) })
  t.equal(response.statusCode, 503)
  t.equal(response.headers['retry-after'], '7')
  // Met first by the read of the sheet's settings (secret, allow-list), before any write.
  t.match(response.json(), { error: 'storage_unavailable', message: /retry later/ })
  t.ok(Date.now() - started < 5000, 'answered within the connection timeout, not left hanging')
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.json().error, 'storage_unavailable')
  const live = await app.inject({ method: 'GET', url: '/livez' })
  t.equal(live.statusCode, 200, 'the process itself is alive')
})

t.test('beyond the queue bound, deliveries get 503 overloaded at once; the rest are stored', async (t) => {
  const app = await testApp(t, { RECEIVER_QUEUE_MAX: '5', RECEIVER_BATCH_MAX: '5' })
  const sheet = await newSheet(app)
  const responses = await Promise.all(
    Array.from({ length: 60 }, (_, i) => app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `t${i}` }) })),
  )
  const ok = responses.filter((r) => r.statusCode === 200)
  const refused = responses.filter((r) => r.statusCode === 503)
  t.equal(ok.length + refused.length, 60, 'every request is answered 200 or 503')
  t.ok(refused.length > 0, `${refused.length} refused`)
  t.ok(ok.length >= 5, `${ok.length} stored`)
  for (const response of refused) {
    t.equal(response.json().error, 'overloaded')
    t.ok(Number(response.headers['retry-after']) > 0)
  }
  const [row] = await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`
  t.equal(row?.n, ok.length, 'exactly the acknowledged deliveries are stored')
})

t.test('overload is logged in summary, not one warn line per refused delivery', async (t) => {
  const { stream, lines } = capturedLog<{ level: number; msg: string; refused?: number }>()
  const app = await buildApp(testConfig(t, { RECEIVER_QUEUE_MAX: '2', RECEIVER_BATCH_MAX: '2' }), { logger: { level: 'info', stream } })
  await app.ready()
  const sheet = await newSheet(app)
  const responses = await Promise.all(
    Array.from({ length: 40 }, (_, i) => app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `o${i}` }) })),
  )
  const refused = responses.filter((r) => r.statusCode === 503).length
  t.ok(refused > 1, `${refused} refused`)
  await app.close()
  const warnings = lines().filter((line) => line.level >= 40)
  t.same(
    warnings.map((line) => line.msg.replace(/\d+ deliveries refused/, 'N deliveries refused')),
    [
      'receiver overloaded: RECEIVER_QUEUE_MAX=2 deliveries waiting; refusing more with 503',
      'receiver overloaded: N deliveries refused with 503 in 10 s',
    ],
    'the first refusal, then a count (here at close)',
  )
  t.equal(1 + (warnings[1]?.refused ?? 0), refused, 'every refusal counted')
})
