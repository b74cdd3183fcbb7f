// Reconciliation against a network's export (POST /sheets/{id}/reconcile, postback-admin reconcile):
// every kind of difference, status words mapped, the rejection evidence found by transaction id
// (also in a repeated or malformed query), exact totals on both sides, the window and its scope.
import { readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { parse } from 'csv-parse/sync'
import t from 'tap'
import { createClient, reconcile } from '../../client/src/index.ts'
import { importCsv } from '../../src/import.ts'
import { idsInQuery } from '../../src/reconcile.ts'
import type { ReconcileResult } from '../../src/schemas/reconcile.ts'
import { adminOn, deliverAll, listen, newKeyHeader, newSheet, scratchDir, testApp } from '../helpers.ts'

const app = await testApp(t)
const baseUrl = await listen(app)
const dir = scratchDir(t, 'postback-reconcile-')

async function importRows(sheet: string, csv: string): Promise<void> {
  await importCsv(app.db, { sheetId: sheet, input: Readable.from([csv]), onRejected: (line, error) => t.fail(`import line ${line}: ${error.message}`) })
}

async function reconcileApi(sheet: string, body: string, options: { type?: string; query?: Record<string, string>; key?: { authorization: string } } = {}) {
  const key = options.key ?? (await newKeyHeader(app, { sheetIds: [sheet] }))
  const query = new URLSearchParams(options.query ?? {}).toString()
  return app.inject({
    method: 'POST',
    url: `/api/v1/postback/sheets/${sheet}/reconcile${query ? `?${query}` : ''}`,
    headers: { ...key, 'content-type': options.type ?? 'text/csv' },
    payload: body,
  })
}

// The sheet as stored: two conversions outside the export's week (old1 named by the export, old2 not).
const STORED = `transaction_id,event,payout,currency,status,received_at
a1,,10.00,USD,approved,2026-11-01T10:00:00Z
a2,,5,USD,approved,2026-11-02T10:00:00Z
a3,,3,USD,pending,2026-11-03T10:00:00Z
a4,,4,EUR,approved,2026-11-04T10:00:00Z
a5,,2,USD,approved,2026-11-05T10:00:00Z
a6,,2,USD,approved,2026-11-05T12:00:00Z
e1,deposit,20,USD,approved,2026-11-06T10:00:00Z
old1,,1,USD,approved,2026-10-01T10:00:00Z
old2,,1,USD,approved,2026-10-01T10:00:00Z
`
// The network's export: a1 and e1 agree, a2 pays more, a3 is approved there, a4 is in USD there,
// m1..m5 never arrived here (m1..m3 were rejected by the receiver), two lines have a bad payout
// (a6's names a stored conversion: it is not missing from the export, only unreadable).
const EXPORT = `transaction_id,event,payout,currency,status,received_at,clicks
a1,,10,USD,sale,2026-11-01 10:00:05,3
a2,,7,USD,approved,2026-11-02 10:00:05,1
a3,,3,USD,Sale,2026-11-03 10:00:05,1
a4,,4,USD,approved,2026-11-04 10:00:05,1
e1,deposit,20,USD,approved,2026-11-06 10:00:05,1
old1,,1,USD,approved,2026-11-07 09:00:00,1
m1,,6,USD,approved,2026-11-02 11:00:00,1
m2,,6,USD,approved,2026-11-02 11:00:00,1
m3,,6,USD,pending,2026-11-03 11:00:00,1
m4,,6,USD,declined,2026-11-04 11:00:00,1
m5,,6,USD,approved,2026-11-05 11:00:00,1
bad,,abc,USD,approved,2026-11-05 11:00:00,1
a6,,xyz,USD,approved,2026-11-05 12:00:00,1
`

async function sheetWithDeliveries(): Promise<{ sheet: string; other: string }> {
  const sheet = await newSheet(app)
  const other = await newSheet(app)
  await importRows(sheet, STORED)
  await importRows(other, 'transaction_id,payout\na5,2\nm4,6\n')
  const send = async (query: string) => (await fetch(`${baseUrl}/meta/postback/conversion?${query}`)).status
  t.same(
    [
      await send(`sheet_id=${sheet}&transaction_id=m1&payout=abc`),
      await send(`sheet_id=${sheet}&transaction_id=m2&transaction_id=m2`),
      // Malformed: the network's template encoded the '=' of transaction_id.
      await send(`sheet_id=${sheet}&transaction_id%3Dm3&payout=1`),
      // m5 is only another parameter's value here: not a delivery of m5.
      await send(`sheet_id=${sheet}&transaction_id=zz&payout=m5`),
      await send(`sheet_id=${sheet}&transaction_id=zz&subid=m5&offer=Sale+m5&payout=x`),
      // Another sheet's rejection and a test postback are not evidence.
      await send(`sheet_id=${other}&transaction_id=m4&payout=abc`),
      await send(`sheet_id=${sheet}&transaction_id=m4&payout=abc&test=1`),
    ],
    [400, 400, 400, 400, 400, 400, 400],
    'the receiver rejected the deliveries',
  )
  // The log is written in the background; the API route flushes it, the CLI (another process) reads the table.
  await app.deliveryLog.flush()
  return { sheet, other }
}

t.test('every kind of difference, exact totals, the evidence of each missing conversion', async (t) => {
  const { sheet } = await sheetWithDeliveries()
  const response = await reconcileApi(sheet, EXPORT)
  t.equal(response.statusCode, 200, response.body)
  const result = response.json<ReconcileResult>()
  t.strictSame(result.window, { from: '2026-11-01T10:00:05.000Z', to: '2026-11-07T09:00:00.001Z', source: 'received_at' }, "the window is the export's received_at range")
  t.strictSame(result.lines, { read: 13, rejected: 2, repeated: 0 })
  t.same(result.rejected_lines.map((line) => [line.line, line.error, line.parameter]), [[13, 'invalid_parameter', 'payout'], [14, 'invalid_parameter', 'payout']])
  t.match(result.rejected_lines[0]?.message, /payout/)
  t.strictSame(result.counts, { missing_here: 5, missing_there: 1, status_differs: 1, currency_differs: 1, payout_differs: 1 })
  // Here: the week's conversions (a2..a6, e1) and those the export names from outside it (a1, old1); not old2.
  // There: the lines read (not bad's nor a6's).
  t.strictSame(result.totals, [
    { status: 'approved', currency: 'EUR', here_conversions: 1, here_revenue: '4.00', there_conversions: 0, there_revenue: '0.00' },
    { status: 'approved', currency: 'USD', here_conversions: 6, here_revenue: '40.00', there_conversions: 9, there_revenue: '63.00' },
    { status: 'pending', currency: 'USD', here_conversions: 1, here_revenue: '3.00', there_conversions: 1, there_revenue: '6.00' },
    { status: 'rejected', currency: 'USD', here_conversions: 0, here_revenue: '0.00', there_conversions: 1, there_revenue: '6.00' },
  ])
  const [oldest] = await app.db.withSession((session) =>
    session.query<{ at: string }>(`SELECT to_char(min(received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at FROM delivery_rejections WHERE sheet_id = $1 AND NOT test`, [sheet]),
  )
  t.strictSame(result.missing_here_evidence, {
    no_delivery_received: 2,
    rejected: [
      { reason: 'invalid_parameter', parameter: 'payout', conversions: 1 },
      { reason: 'missing_parameter', parameter: 'transaction_id', conversions: 1 },
      { reason: 'repeated_parameter', parameter: 'transaction_id', conversions: 1 },
    ],
    log_since: oldest?.at,
  })
  const brief = result.differences.map((d) => [d.kind, d.transaction_id, d.event, d.fields.join(' '), d.here?.status ?? null, d.there?.status ?? null, d.here?.payout ?? null, d.there?.payout ?? null, d.here?.currency ?? null, d.there?.currency ?? null])
  t.strictSame(brief, [
    ['missing_here', 'm1', null, '', null, 'approved', null, '6', null, 'USD'],
    ['missing_here', 'm2', null, '', null, 'approved', null, '6', null, 'USD'],
    ['missing_here', 'm3', null, '', null, 'pending', null, '6', null, 'USD'],
    ['missing_here', 'm4', null, '', null, 'rejected', null, '6', null, 'USD'],
    ['missing_here', 'm5', null, '', null, 'approved', null, '6', null, 'USD'],
    ['missing_there', 'a5', null, '', 'approved', null, '2', null, 'USD', null],
    ['status_differs', 'a3', null, 'status', 'pending', 'approved', '3', '3', 'USD', 'USD'],
    ['currency_differs', 'a4', null, 'currency', 'approved', 'approved', '4', '4', 'EUR', 'USD'],
    ['payout_differs', 'a2', null, 'payout', 'approved', 'approved', '5', '7', 'USD', 'USD'],
  ])
  t.equal(result.truncated, false)
  const byId = new Map(result.differences.map((d) => [d.transaction_id, d]))
  t.same(byId.get('m1')?.evidence?.map((e) => [e.reason, e.parameter]), [['invalid_parameter', 'payout']], 'm1: its delivery was rejected for its payout')
  t.same(byId.get('m2')?.evidence?.map((e) => [e.reason, e.parameter]), [['repeated_parameter', 'transaction_id']], 'm2: found in a repeated transaction_id')
  t.same(byId.get('m3')?.evidence?.map((e) => [e.reason, e.parameter]), [['missing_parameter', 'transaction_id']], 'm3: found in a malformed query')
  t.same(byId.get('m4')?.evidence, [], "m4: no delivery (another sheet's and a test postback's do not count)")
  t.same(byId.get('m5')?.evidence, [], "m5: no delivery (another parameter's value is not a transaction id)")
  t.notOk(byId.has('a6'), 'a6 is on a line refused for its payout: not missing from the export')
  t.match(byId.get('m4')?.explanation, /no delivery received/)
  t.match(byId.get('m1')?.explanation, /rejected: invalid_parameter \(payout\)/)
  t.equal(byId.get('a3')?.there?.network_status, 'Sale', 'the word as the export wrote it')
  t.equal(byId.get('m1')?.there?.line, 8)
  t.equal(byId.get('a5')?.evidence, null)
})

t.test('JSON lines, status words mapped by the URL parameters, a date column as the window, a limit', async (t) => {
  const sheet = await newSheet(app)
  await importRows(sheet, 'transaction_id,payout,status,received_at\nj1,1,pending,2026-11-10T23:59:00Z\nj2,2,approved,2026-11-11T00:00:00Z\nj3,3,approved,2026-11-12T12:00:00Z\nj4,4,approved,2026-11-09T23:59:00Z\n')
  const lines = [
    { transaction_id: 'j1', payout: 1, status: '1', date: '2026-11-10' },
    { transaction_id: 'j2', payout: '2.00', status: '3', date: '2026-11-11' },
    { transaction_id: 'j9', payout: 9, status: '2', date: '2026-11-11' },
    { transaction_id: 'j1', payout: 1, status: '1', date: '2026-11-10', note: 'repeated: the last line of a key counts' },
    'not json',
  ]
  const body = lines.map((line) => (typeof line === 'string' ? line : JSON.stringify(line))).join('\n')
  const query = { approved_status: '1', pending_status: '2', rejected_status: '3' }
  const result = (await reconcileApi(sheet, body, { type: 'application/x-ndjson', query })).json<ReconcileResult>()
  t.strictSame(result.window, { from: '2026-11-10T00:00:00.000Z', to: '2026-11-12T00:00:00.000Z', source: 'date' }, 'whole days from the first date to the last')
  t.strictSame(result.lines, { read: 5, rejected: 1, repeated: 1 })
  t.equal(result.rejected_lines[0]?.error, 'invalid_line')
  // j1: pending here, "1" (approved) there; j2: approved here, "3" (rejected) there, payout equal (2 = 2.00);
  // j9 missing here; j3 and j4 outside the two days.
  t.same(
    result.differences.map((d) => [d.kind, d.transaction_id, d.fields]),
    [
      ['missing_here', 'j9', []],
      ['status_differs', 'j2', ['status']],
      ['status_differs', 'j1', ['status']],
    ],
    'in line order: j1 is at its last line, 4',
  )
  t.equal(result.differences.find((d) => d.transaction_id === 'j1')?.there?.line, 4)
  const limited = (await reconcileApi(sheet, body, { type: 'application/x-ndjson', query: { ...query, limit: '1' } })).json<ReconcileResult>()
  t.same([limited.differences.length, limited.truncated, limited.counts.status_differs], [1, true, 2], 'a limit lists fewer and says so; the counts are all')
  const unmapped = (await reconcileApi(sheet, body, { type: 'application/x-ndjson' })).json<ReconcileResult>()
  t.equal(unmapped.lines.rejected, 5, 'without the mapping, "1", "2", "3" are unknown status words')
  t.match(unmapped.rejected_lines[0], { error: 'invalid_parameter', parameter: 'status' })
  const window = (await reconcileApi(sheet, body, { type: 'application/x-ndjson', query: { ...query, from: '2026-11-09', to: '2026-11-13' } })).json<ReconcileResult>()
  t.same(window.window.source, 'parameters')

  // The typed client's call, over HTTP.
  const key = await newKeyHeader(app, { sheetIds: [sheet] })
  const client = createClient({ baseUrl, apiKey: key.authorization.slice('Bearer '.length) })
  const viaClient = await reconcile(client, sheet, body, { format: 'jsonl', query })
  t.equal(viaClient.response.status, 200)
  t.same(viaClient.data?.differences.map((d) => d.transaction_id), ['j9', 'j2', 'j1'], 'the client sends the export as JSON lines and reads the streamed answer')
  t.same(window.differences.filter((d) => d.kind === 'missing_there').map((d) => d.transaction_id).sort(), ['j3', 'j4'], 'from/to widen the stored side')
})

t.test('refusals: another sheet\'s key, a file without transaction_id, a body too large, an unsupported type', async (t) => {
  const sheet = await newSheet(app)
  const other = await newSheet(app)
  const foreign = await reconcileApi(sheet, 'transaction_id\nx\n', { key: await newKeyHeader(app, { sheetIds: [other] }) })
  t.equal(foreign.statusCode, 403)
  const noId = await reconcileApi(sheet, 'id,payout\nx,1\n')
  t.same([noId.statusCode, noId.json().error], [400, 'invalid_file'])
  t.match(noId.json().message, /no transaction_id column/)
  const json = await reconcileApi(sheet, '{}', { type: 'application/json' })
  t.equal(json.statusCode, 415)
  const backwards = await reconcileApi(sheet, 'transaction_id\nx\n', { query: { from: '2026-11-02', to: '2026-11-01' } })
  t.same([backwards.statusCode, backwards.json().parameter], [400, 'to'])
  const long = await reconcileApi(sheet, '{"transaction_id": 9007199254740993}\n{"transaction_id": "9007199254740993"}\n', { type: 'application/x-ndjson' })
  t.match(long.json<ReconcileResult>(), { lines: { read: 2, rejected: 1 }, rejected_lines: [{ line: 1, parameter: 'transaction_id', message: /2\^53/ }] }, 'an id past 2^53 as a JSON number has lost digits: refused')

  const small = await testApp(t, { RECONCILE_BODY_MAX_BYTES: '1024' })
  const smallSheet = await newSheet(small)
  const key = await newKeyHeader(small, { sheetIds: [smallSheet] })
  const big = await small.inject({
    method: 'POST',
    url: `/api/v1/postback/sheets/${smallSheet}/reconcile`,
    headers: { ...key, 'content-type': 'text/csv' },
    payload: `transaction_id\n${Array.from({ length: 500 }, (_, i) => `id-${i}`).join('\n')}\n`,
  })
  t.same([big.statusCode, big.json().error], [413, 'body_too_large'])
  // Without a content-length (chunked, as curl sends a pipe): refused while it streams in.
  const smallUrl = await listen(small)
  const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const outgoing = httpRequest(`${smallUrl}/api/v1/postback/sheets/${smallSheet}/reconcile`, { method: 'POST', headers: { ...key, 'content-type': 'text/csv' } }, (response) => {
      let body = ''
      response.on('data', (chunk: Buffer) => (body += chunk))
      response.on('end', () => resolve({ status: response.statusCode!, body }))
    })
    outgoing.on('error', reject)
    outgoing.end(`transaction_id\n${Array.from({ length: 500 }, (_, i) => `id-${i}`).join('\n')}\n`)
  })
  t.same([chunked.status, JSON.parse(chunked.body).error], [413, 'body_too_large'], 'also without a content-length, while it streams in')

  // Every staged table is dropped, after answers and after failures alike.
  const left = await app.db.withSession((session) => session.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_class WHERE relname LIKE 'reconcile\\_%'"))
  t.same(left, [{ n: 0 }], 'no temporary table is left')
})

t.test('RECONCILE_CONCURRENCY: one more than it is answered 503 at once', async (t) => {
  const one = await testApp(t, { RECONCILE_CONCURRENCY: '1' })
  const sheet = await newSheet(one)
  const key = await newKeyHeader(one, { sheetIds: [sheet] })
  const request = (payload: string | PassThrough) =>
    one.inject({ method: 'POST', url: `/api/v1/postback/sheets/${sheet}/reconcile`, headers: { ...key, 'content-type': 'text/csv' }, payload })
  // The first one's export is still arriving.
  const slow = new PassThrough()
  slow.write('transaction_id\nx1\n')
  const first = request(slow)
  await new Promise((resolve) => setTimeout(resolve, 100))
  const second = await request('transaction_id\nx2\n')
  t.same([second.statusCode, second.json().error, second.headers['retry-after'] !== undefined], [503, 'overloaded', true])
  slow.end('x3\n')
  t.same((await first).json<ReconcileResult>().counts.missing_here, 2, 'the first one completes')
  // Its slot frees once its session has closed, a moment after its answer.
  let next = 0
  for (let attempt = 0; attempt < 100 && next !== 200; attempt++) {
    if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 20))
    next = (await request('transaction_id\nx2\n')).statusCode
  }
  t.equal(next, 200, 'and the next one runs')
})

t.test('counts and totals agree while the receiver stores the conversions being reconciled (one snapshot)', async (t) => {
  const sheet = await newSheet(app)
  const keys = Array.from({ length: 400 }, (_, i) => `s${i}`)
  const exportText = `transaction_id,payout\n${keys.map((key) => `${key},1`).join('\n')}\n`
  const query = { from: '2026-01-01', to: '2100-01-01' }
  // Four loops store the export's conversions (and others) while reconciliations run.
  let next = 0
  const writing = Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < keys.length) {
        const key = keys[next++]!
        await deliverAll(app, [{ sheet_id: sheet, transaction_id: key, payout: '1' }, { sheet_id: sheet, transaction_id: `other-${key}`, payout: '1' }])
      }
    }),
  )
  const broken: string[] = []
  let runs = 0
  while (next < keys.length) {
    const result = (await reconcileApi(sheet, exportText, { query })).json<ReconcileResult>()
    runs++
    // The stored side is the window's conversions: those the export names (all of its keys but the
    // missing ones) and those it lacks.
    const here = result.totals.reduce((sum, total) => sum + total.here_conversions, 0)
    const expected = keys.length - result.counts.missing_here + result.counts.missing_there
    if (here !== expected) broken.push(`${here} stored, ${keys.length} - ${result.counts.missing_here} + ${result.counts.missing_there}`)
  }
  await writing
  t.ok(runs >= 3, `${runs} reconciliations while the conversions were stored`)
  t.same(broken, [], 'each one read one state of the store')
})

t.test('postback-admin reconcile: a summary, the JSON report, every difference in --out', async (t) => {
  const { sheet } = await sheetWithDeliveries()
  const exportFile = join(dir, 'export.csv')
  writeFileSync(exportFile, EXPORT)
  const out = join(dir, 'differences.csv')
  const run = adminOn({}, app.db)
  const { code, stdout, stderr, result } = await run('reconcile', '--sheet', sheet, '--out', out, exportFile)
  t.equal(code, 0, stderr)
  t.match(stderr, /line 13: invalid_parameter \(payout\)/)
  t.match(stderr, /line 14: invalid_parameter \(payout\)/)
  t.match(stdout, /differences: 5 missing here, 1 missing there, 1 status, 1 currency, 1 payout/)
  t.match(stdout, /missing here: 2 never received/)
  t.match(stdout, /1 rejected by the receiver: repeated_parameter \(transaction_id\)/)
  t.strictSame(result.counts, { missing_here: 5, missing_there: 1, status_differs: 1, currency_differs: 1, payout_differs: 1 })
  const rows = parse(readFileSync(out), { columns: true }) as Array<Record<string, string>>
  t.same(rows.map((row) => `${row.kind} ${row.transaction_id}`), ['missing_here m1', 'missing_here m2', 'missing_here m3', 'missing_here m4', 'missing_here m5', 'missing_there a5', 'status_differs a3', 'currency_differs a4', 'payout_differs a2'])
  t.match(rows[0], { there_line: '8', there_payout: '6', evidence: /invalid_parameter \(payout\)/ })
  t.match(rows[8], { here_payout: '5', there_payout: '7', fields: 'payout' })
  const narrowed = await run('reconcile', '--sheet', sheet, '--from', '2026-11-05', '--to', '2026-11-06', exportFile)
  t.equal(narrowed.result.window.source, 'parameters')
  t.equal(narrowed.result.counts.missing_there, 1, 'a5 is the one stored conversion of that day the export lacks')
})

t.test("the transaction ids a rejected delivery's query is evidence for", async (t) => {
  const ids = (query: string) => [...idsInQuery(query)].sort()
  t.same(ids('sheet_id=s&transaction_id=m1&payout=abc'), ['m1'])
  t.same(ids('transaction_id=m2&transaction_id=m3'), ['m2', 'm3'], 'each of several')
  t.same(ids('sheet_id=s&transaction_id%3Dm3&payout=1'), ['m3'], "an encoded '='")
  t.same(ids('sheet_id=s&amp;transaction_id=m4'), ['m4'], "'&amp;'")
  t.same(ids('sheet_id=s?transaction_id=m5'), ['m5'], "a second '?'")
  t.same(ids('transaction_id=a%26b'), ['a&b'], "an encoded '&' is part of the value: not evidence for a")
  t.same(ids('transaction_id=zz&subid=m6&offer=Sale+m6'), ['zz'], "another parameter's value is not")
})
