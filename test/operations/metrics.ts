// GET /metrics as Prometheus scrapes it: requests, postback outcomes, batches, queue depth,
// database errors and process metrics, counted per app instance.
import { createServer, type Socket } from 'node:net'
import { Histogram, Registry } from 'prom-client'
import t from 'tap'
import { DURATION_BUCKETS, RequestDurations } from '../../plugins/metrics.ts'
import { buildApp } from '../../src/app.ts'
import { loadConfig } from '../../src/config.ts'
import { newSheet, receiverUrl, testApp } from '../helpers.ts'
import type { FastifyInstance } from 'fastify'

async function scrape(app: FastifyInstance) {
  const response = await app.inject({ method: 'GET', url: '/metrics' })
  return { status: response.statusCode, type: response.headers['content-type'], text: response.body }
}

/** The value of one sample, e.g. `postback_deliveries_total{outcome="stored"}`; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

// The first test's counts are exact: it runs first on this app.
const app = await testApp(t)

t.test('after a stored, a duplicate and rejected postbacks, /metrics counts each', async (t) => {
  const sheet = await newSheet(app)
  const deliver = async (params: Record<string, string>) =>
    (await app.inject({ method: 'GET', url: receiverUrl(params) })).statusCode
  t.equal(await deliver({ sheet_id: sheet, transaction_id: 'm-1', payout: '1.50' }), 200)
  t.equal(await deliver({ sheet_id: sheet, transaction_id: 'm-1', payout: '1.50' }), 200)
  t.equal(await deliver({ sheet_id: sheet, transaction_id: 'm-2', payout: '{payout}' }), 400)
  t.equal(await deliver({ sheet_id: sheet, transaction_id: 'm-3', payout: '[payout]' }), 400)
  t.equal(await deliver({ sheet_id: 'no-such-sheet', transaction_id: 'm-4' }), 404)
  t.equal(await deliver({ transaction_id: 'm-5' }), 400)
  t.equal((await app.inject({ method: 'GET', url: '/nowhere/42' })).statusCode, 404)

  const { status, type, text } = await scrape(app)
  t.equal(status, 200)
  t.match(type, /^text\/plain; version=0\.0\.4/)
  t.equal(sample(text, 'postback_deliveries_total{outcome="stored"}'), 1)
  t.equal(sample(text, 'postback_deliveries_total{outcome="duplicate"}'), 1)
  t.equal(sample(text, 'postback_deliveries_total{outcome="rejected",reason="unreplaced_macro"}'), 2)
  t.equal(sample(text, 'postback_deliveries_total{outcome="rejected",reason="unknown_sheet"}'), 1)
  t.equal(sample(text, 'postback_deliveries_total{outcome="rejected",reason="missing_parameter"}'), 1)

  const receiver = 'method="GET",route="/meta/postback/conversion"'
  t.equal(sample(text, `http_request_duration_seconds_count{${receiver},status_code="200"}`), 2)
  t.equal(sample(text, `http_request_duration_seconds_count{${receiver},status_code="400"}`), 3)
  t.equal(sample(text, `http_request_duration_seconds_count{${receiver},status_code="404"}`), 1)
  t.equal(sample(text, `http_request_duration_seconds_bucket{le="+Inf",${receiver},status_code="200"}`), 2)
  t.ok(sample(text, `http_request_duration_seconds_sum{${receiver},status_code="200"}`)! > 0, 'latency is recorded')
  t.equal(
    sample(text, 'http_request_duration_seconds_count{method="GET",route="unmatched",status_code="404"}'),
    1,
    'an unrouted URL is one label value, not its own series',
  )
  t.notMatch(text, '/nowhere/42')

  // Three deliveries reached the writer (stored, duplicate, unknown sheet), one at a time.
  t.equal(sample(text, 'postback_batch_size_count'), 3)
  t.equal(sample(text, 'postback_batch_size_sum'), 3)
  t.equal(sample(text, 'postback_queue_depth'), 0)
  t.notMatch(text, 'postback_database_errors_total{', 'no database errors')
  t.match(text, '# TYPE postback_database_errors_total counter')

  for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes']) {
    t.ok(sample(text, name)! > 0, `process metric ${name}`)
  }
})

t.test('each app counts its own: a second app in the same process starts from zero', async (t) => {
  const sheet = await newSheet(app)
  t.equal((await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: 'x' }) })).statusCode, 200)
  const second = await testApp(t)
  t.ok(sample((await scrape(app)).text, 'postback_deliveries_total{outcome="stored"}')! >= 1, 'the first app has counted')
  t.equal(sample((await scrape(second)).text, 'postback_deliveries_total{outcome="stored"}'), undefined)
})

t.test('a database that hangs: queue depth while waiting, then database errors and 503s counted', async (t) => {
  // A server that accepts connections and never answers: the pg driver waits for its connect timeout.
  const sockets = new Set<Socket>()
  const blackhole = createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => blackhole.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    blackhole.close()
  })
  const { port } = blackhole.address() as { port: number }
  const app = await buildApp(
    loadConfig({
      DATABASE_URL: `postgresql://postgres@127.0.0.1:${port}/none`,
      MIGRATE_ON_START: 'false',
      DB_CONNECT_TIMEOUT_MS: '1500',
      LOG_LEVEL: 'silent',
    }),
  )
  t.teardown(() => app.close())

  // Through the receiver, a delivery first waits for its sheet's settings (secret, allow-list); the
  // writer's own queue is seen by writing to it directly.
  const pending = Array.from({ length: 3 }, (_, i) =>
    app.inject({ method: 'GET', url: receiverUrl({ sheet_id: 's', transaction_id: `h${i}` }) }),
  )
  const written = Array.from({ length: 3 }, (_, i) => app.conversionWriter.write({ sheet_id: 's', transaction_id: `w${i}` }).catch((error: { statusCode?: number }) => error.statusCode))
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(sample((await scrape(app)).text, 'postback_queue_depth'), 3, 'three deliveries wait for the store')

  const responses = await Promise.all(pending)
  t.same(responses.map((r) => r.statusCode), [503, 503, 503])
  t.same(await Promise.all(written), [503, 503, 503])
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503)

  const { text } = await scrape(app)
  t.equal(sample(text, 'postback_queue_depth'), 0)
  t.equal(sample(text, 'postback_deliveries_total{outcome="rejected",reason="storage_unavailable"}'), 3)
  t.equal(sample(text, 'postback_database_errors_total{operation="request"}'), 3, 'each delivery that met the store unreachable')
  const batches = sample(text, 'postback_batch_size_count')!
  t.ok(batches >= 1 && batches <= 3, `${batches} batch(es)`)
  t.equal(sample(text, 'postback_batch_size_sum'), 3)
  t.equal(sample(text, 'postback_database_errors_total{operation="conversion_batch"}'), batches, 'each failed batch is one database error')
  t.equal(sample(text, 'postback_database_errors_total{operation="readiness"}'), 1)
})

t.test("the request histogram is written out as prom-client's own Histogram writes the same observations", async (t) => {
  const ours = new Registry()
  const durations = new RequestDurations()
  ours.registerMetric(durations as unknown as Histogram)
  const theirs = new Registry()
  const histogram = new Histogram({
    name: durations.name,
    help: durations.help,
    labelNames: ['method', 'route', 'status_code'],
    buckets: DURATION_BUCKETS,
    registers: [theirs],
  })
  const observations: Array<[string, string, number, number]> = [
    ['GET', '/meta/postback/conversion', 200, 0.0031],
    ['GET', '/meta/postback/conversion', 200, 0.005],
    ['GET', '/meta/postback/conversion', 200, 0.7],
    ['GET', '/meta/postback/conversion', 400, 12],
    ['GET', 'unmatched', 404, 0.0001],
    ['POST', '/api/v1/postback/sheets', 201, 0.02],
    ['GET', '/a "quoted\\" route', 200, 0.25],
  ]
  for (const [method, route, status, seconds] of observations) {
    durations.observe(method, route, status, seconds)
    histogram.observe({ method, route, status_code: status }, seconds)
  }
  t.equal(await ours.metrics(), await theirs.metrics())
  durations.reset()
  histogram.reset()
  t.equal(await ours.metrics(), await theirs.metrics(), 'and after a reset')
})
