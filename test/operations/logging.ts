// Logs as an operator reads them: JSON lines, a request id on each request's lines and in the
// x-request-id header, secrets redacted, one line per rejected postback, probes kept quiet.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { ChunkedStdout, logBytesDropped, millisJson, NonBlockingOut } from '../../src/logger.ts'
import { isSecretParameter, redactQueryValues } from '../../src/logging.ts'
import { capturedLog, fifoEnds, newSheet, readUntil, receiverUrl, scratchDir, testConfig } from '../helpers.ts'

interface LogLine {
  level: number
  msg: string
  reqId?: string
  req?: { url: string }
  [field: string]: unknown
}

const { stream, raw, lines } = capturedLog<LogLine>()
const app = await buildApp(testConfig(t), { logger: { level: 'info', stream } })
t.teardown(() => app.close())
await app.ready()
const sheet = await newSheet(app)

const linesOf = (id: string) => lines().filter((line) => line.reqId === id)
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

t.test('a sane incoming x-request-id is kept, echoed, and on every line of that request', async (t) => {
  const response = await app.inject({
    method: 'GET',
    url: receiverUrl({ sheet_id: sheet, transaction_id: 'L-1', payout: '{payout}' }),
    headers: { 'x-request-id': 'lb-7f3a.2:9_x' },
  })
  t.equal(response.statusCode, 400)
  t.equal(response.headers['x-request-id'], 'lb-7f3a.2:9_x')
  t.same(
    linesOf('lb-7f3a.2:9_x').map((line) => line.msg),
    ['postback rejected', 'request completed'],
  )
  t.match(linesOf('lb-7f3a.2:9_x').at(-1), { level: 30, req: { method: 'GET', url: /^\/meta\/postback\/conversion\?/ }, res: { statusCode: 400 }, responseTime: Number })
})

t.test('without a usable incoming id, each request gets a new UUID', async (t) => {
  const ids: string[] = []
  for (const headers of [{}, { 'x-request-id': 'a'.repeat(65) }, { 'x-request-id': 'bad id"<>' }, { 'x-request-id': '' }, {}]) {
    const response = await app.inject({ method: 'GET', url: '/nowhere', headers })
    const id = String(response.headers['x-request-id'])
    t.match(id, UUID, JSON.stringify(headers))
    t.same(linesOf(id).map((line) => line.msg), ['request completed'], 'one line per request, carrying it')
    ids.push(id)
  }
  t.equal(new Set(ids).size, ids.length, 'all different')
  const malformed = await app.inject({ method: 'GET', url: '/meta/postback/conversion%', headers: { 'x-request-id': 'bad-path-1' } })
  t.equal(malformed.statusCode, 400)
  t.equal(malformed.headers['x-request-id'], 'bad-path-1', 'also on an answer given before routing')
})

t.test('secret query values and authorization headers never reach the log', async (t) => {
  const url =
    `/meta/postback/conversion?sheet_id=${sheet}&transaction_id=L-2&api_key=SEKRET1&token=SEKRET2` +
    `&password=SEKRET3&Access_Token=SEKRET4&api%5Fkey=SEKRET5&apiKey=SEKRET6&keyword=shoes&payout=2`
  const response = await app.inject({
    method: 'GET',
    url,
    headers: { authorization: 'Bearer SEKRET7', 'x-request-id': 'redaction-1' },
  })
  t.equal(response.statusCode, 200)
  const [completed] = linesOf('redaction-1')
  t.equal(
    completed?.req?.url,
    `/meta/postback/conversion?sheet_id=${sheet}&transaction_id=L-2&api_key=[REDACTED]&token=[REDACTED]` +
      `&password=[REDACTED]&Access_Token=[REDACTED]&api%5Fkey=[REDACTED]&apiKey=[REDACTED]&keyword=shoes&payout=2`,
  )

  // A line that logs headers (a plugin's debugging, an error's context) has them redacted too.
  app.log.info({ headers: { authorization: 'Bearer SEKRET8', 'x-api-key': 'SEKRET9', accept: '*/*' } }, 'headers at top')
  app.log.info({ request: { headers: { authorization: 'Bearer SEKRET10', cookie: 'sid=SEKRET11' } }, apiKey: 'SEKRET12' }, 'headers nested')
  const failure = Object.assign(new TypeError('upstream refused'), { headers: { authorization: 'Bearer SEKRET13' }, password: 'SEKRET14', status: 401 })
  app.log.error({ err: failure }, 'error with secrets')
  // A request or reply logged under req / res goes through its serializer, which keeps no headers.
  app.log.info({ req: { method: 'GET', url: '/x?token=SEKRET15', headers: { authorization: 'Bearer SEKRET16' } }, res: { statusCode: 200, headers: { 'set-cookie': 'SEKRET17' } } }, 'request object')
  const logged = lines()
  t.match(logged.find((line) => line.msg === 'error with secrets'), {
    err: { type: 'TypeError', message: 'upstream refused', stack: /upstream refused/, status: 401, password: '[REDACTED]', headers: { authorization: '[REDACTED]' } },
  }, 'an error keeps its class, message and stack')
  t.equal(failure.headers.authorization, 'Bearer SEKRET13', 'the logged object itself is left as it was')
  t.match(logged.find((line) => line.msg === 'headers at top'), {
    headers: { authorization: '[REDACTED]', 'x-api-key': '[REDACTED]', accept: '*/*' },
  })
  t.match(logged.find((line) => line.msg === 'headers nested'), {
    request: { headers: { authorization: '[REDACTED]', cookie: '[REDACTED]' } },
    apiKey: '[REDACTED]',
  })
  t.notMatch(raw.join('\n'), /SEKRET/, 'no secret anywhere in the log')
})

t.test("a read-only object and a failed statement's error: no secret either", async (t) => {
  app.log.info({ user: Object.freeze({ name: 'ann', password: 'SEKRET22' }) }, 'frozen')
  // A store's error may carry the statement's values (PGlite's does); the batch's are deliveries.
  const failed = await app.db
    .query({ name: 'logging_test_statement', signature: { parameters: ['text[]'], returns: 'n int' }, text: 'SELECT 1 / 0 WHERE $1::text[] IS NOT NULL', values: [['SEKRET23']] })
    .catch((error: unknown) => error)
  t.match(failed, { code: '22012' }, 'the statement failed')
  app.log.error({ err: failed }, 'statement failed')
  const logged = lines()
  t.match(logged.find((line) => line.msg === 'frozen'), { user: { name: 'ann', password: '[REDACTED]' } })
  t.ok(logged.find((line) => line.msg === 'statement failed'), 'the failure is logged')
  t.notMatch(raw.join('\n'), /SEKRET2[23]/, 'no secret anywhere in the log')
})

t.test('one info line per rejected postback, with its reason, also when no sheet is named', async (t) => {
  const cases: Array<[Record<string, string>, string, string]> = [
    [{ sheet_id: sheet, transaction_id: '', payout: '1' }, 'missing_parameter', 'transaction_id'],
    [{ transaction_id: 'L-3' }, 'missing_parameter', 'sheet_id'],
    [{ sheet_id: 'no-such-sheet', transaction_id: 'L-4' }, 'unknown_sheet', 'sheet_id'],
  ]
  for (const [params, reason, parameter] of cases) {
    const response = await app.inject({ method: 'GET', url: receiverUrl(params) })
    const rejected = linesOf(String(response.headers['x-request-id'])).filter((line) => line.msg === 'postback rejected')
    t.match(rejected, [{ level: 30, reason, parameter }], JSON.stringify(params))
    t.equal(rejected.length, 1)
  }
})

t.test('health checks and scrapes are not logged at info', async (t) => {
  const before = raw.length
  for (const url of ['/livez', '/readyz', '/metrics']) {
    const response = await app.inject({ method: 'GET', url })
    t.equal(response.statusCode, 200, url)
    t.match(response.headers['x-request-id'], UUID, `${url} still answers with its id`)
  }
  t.same(raw.slice(before), [])
})

t.test('which query parameters count as secret', async (t) => {
  for (const name of ['key', 'KEY', 'api_key', 'apikey', 'apiKey', 'x-api-key', 'access_token', 'token', 'secret', 'client_secret', 'password', 'passwd', 'auth', 'signature', 'session_id']) {
    t.ok(isSecretParameter(name), name)
  }
  for (const name of ['sheet_id', 'transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id', 'keyword', 'monkey', 'sub1', 'clickid']) {
    t.notOk(isSecretParameter(name), name)
  }
  t.equal(redactQueryValues('/a'), '/a')
  t.equal(redactQueryValues('/a?'), '/a?')
  t.equal(redactQueryValues('/a?token'), '/a?token', 'a name without a value has nothing to hide')
  t.equal(redactQueryValues('/a?token=&x=1'), '/a?token=[REDACTED]&x=1')
  t.equal(redactQueryValues('/a?%ZZkey=1&key=a=b'), '/a?%ZZkey=1&key=[REDACTED]', 'a malformed name is compared as sent')
})

t.test('the access line writes the time taken to the microsecond, as a JSON number', async (t) => {
  const cases: Array<[number, string]> = [
    [19.878717999999935, '19.879'],
    [0, '0.000'],
    [0.0004, '0.000'],
    [0.0105, '0.011'],
    [7.05, '7.050'],
    [12345.6789, '12345.679'],
    [Number.NaN, 'null'],
    [Number.POSITIVE_INFINITY, 'null'],
  ]
  for (const [ms, text] of cases) t.equal(millisJson(ms), text, String(ms))
  for (let i = 0; i < 2000; i++) {
    const ms = Math.random() * 10 ** ((i % 6) - 1)
    const written = millisJson(ms)
    if (!/^\d+\.\d{3}$/.test(written) || Math.abs(JSON.parse(written) - ms) > 0.0005) t.fail(`${ms} written ${written}`)
  }
  await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: 'L-time' }), headers: { 'x-request-id': 'access-line-time' } })
  const line = raw.find((text) => text.includes('"reqId":"access-line-time"') && text.includes('"request completed"'))
  t.match(line, /,"responseTime":\d+\.\d{3},/, 'the access line')
})

t.test("a request's lines, put together by the app's logger, are the lines pino writes for them", async (t) => {
  // Another logger option (pino's default message key, which changes nothing) makes the app log
  // through pino (the access line, and each request's logger from pino's child()): the two apps'
  // lines for the same requests must be the same text, the access line and the others (a refused
  // delivery's, written through the request's logger).
  const throughPino = capturedLog()
  const other = await buildApp(testConfig(t), { logger: { level: 'info', stream: throughPino.stream, messageKey: 'msg' } })
  t.teardown(() => other.close())
  await other.ready()
  const requests = [
    { url: '/meta/postback/conversion?sheet_id=no-such-sheet&transaction_id=L-5%22%5C%C3%A9&token=SEKRET30&payout=3', headers: { host: 'h"ö\\\u0001:8080' } },
    { url: '/nowhere?a="b"', headers: { 'accept-version': '1.x' } },
    // One character JSON escapes in each: the host as sent, the URL with a raw backslash.
    { url: '/nowhere?a=b', headers: { host: 'back\\slash' } },
    { url: '/nowhere?a=b', headers: { host: 'control\u0001' } },
    { url: '/nowhere?a=\\b', headers: {} },
  ]
  const requestLines = (log: string[], id: string) =>
    log.filter((line) => line.includes(`"reqId":"${id}"`)).map((line) => line.replace(/"time":\d+/, '"time":0').replace(/"responseTime":[\d.e-]+/, '"responseTime":0'))
  for (const [index, request] of requests.entries()) {
    const id = `access-line-${index}`
    for (const target of [app, other]) await target.inject({ method: 'GET', ...request, headers: { ...request.headers, 'x-request-id': id } })
    const byHand = requestLines(raw, id)
    t.ok(byHand.some((line) => line.includes('request completed')), `written: ${request.url}`)
    t.same(requestLines(throughPino.raw, id), byHand, request.url)
  }
  t.match(requestLines(raw, 'access-line-0'), [/"msg":"postback rejected"/, /"msg":"request completed"/], 'a line besides the access line')
  for (const line of throughPino.raw.filter((text) => text.includes('"msg":"request completed"'))) {
    t.match(line, /"responseTime":\d+(?:\.\d{1,3})?,/, 'through pino too, the time taken to the microsecond')
  }
  t.notMatch(raw.join('\n'), /SEKRET30/)
})

t.test('through a stream that takes each line with its level (pino.multistream), the access line is still written', async (t) => {
  const captured = capturedLog<LogLine>()
  const warnings = capturedLog<LogLine>()
  const streams = pino.multistream([
    { level: 'info', stream: captured.stream },
    { level: 'warn', stream: warnings.stream },
  ])
  const multi = await buildApp(testConfig(t), { logger: { level: 'info', stream: streams } })
  t.teardown(() => multi.close())
  await multi.ready()
  // The multistream routes a line by the level pino gives it beside the line: not the last one's.
  multi.log.warn('a warning first')
  await multi.inject({ method: 'GET', url: '/nowhere', headers: { 'x-request-id': 'multistream-1' } })
  t.match(captured.lines().filter((line) => line.reqId === 'multistream-1'), [{ msg: 'request completed', level: 30, res: { statusCode: 404 } }])
  t.same(warnings.lines().map((line) => line.msg), ['a warning first'], 'the warn stream has the warning only')
})

for (const sync of [true, false]) {
  t.test(`lines gathered into chunks of bytes come out whole and in order (${sync ? 'written in place' : 'written asynchronously'}): multi-byte characters, a line longer than a chunk, a flush`, async (t) => {
    const file = join(scratchDir(t), 'out.log')
    const destination = pino.destination({ dest: file, sync, minLength: 1, contentMode: 'buffer' })
    t.teardown(() => destination.destroy())
    // 64 bytes: every few lines fill a chunk. The second line is 19 characters and 55 bytes.
    const chunked = new ChunkedStdout(destination, 64)
    const written = ['plain line\n', `${'✓'.repeat(18)}\n`, 'évènement 😀 ünïcödé\n', `${'long '.repeat(40)}\n`, 'x\n', 'Ωmega at the end\n', 'last\n']
    for (const line of written) chunked.write(line)
    await new Promise<void>((resolve, reject) => chunked.flush((error) => (error ? reject(error) : resolve())))
    t.equal(readFileSync(file, 'utf8'), written.join(''))
  })
}

t.test('into a pipe whose reader has no room, chunks wait in order and a flush calls back once all are written; a reader gone is an error', async (t) => {
  const { readFd, writeFd, close } = fifoEnds(t)
  const errors: Error[] = []
  const out = new NonBlockingOut(writeFd, (error) => errors.push(error))
  // 200 KB, ten chunks of one letter each: a pipe holds 64 KB.
  const chunks = Array.from({ length: 10 }, (_, index) => Buffer.alloc(20_000, 97 + index))
  const started = performance.now()
  for (const chunk of chunks) out.write(chunk)
  t.ok(performance.now() - started < 500, 'the writes return at once')
  let flushed: Error | null | undefined = null
  let flushes = 0
  out.flush((error) => {
    flushes++
    flushed = error
  })
  await sleep(50)
  t.equal(flushed, null, 'no flush while the reader takes nothing')
  const read: Buffer[] = []
  await readUntil(readFd, read, ({ bytes }) => bytes >= 200_000)
  await sleep(10)
  t.equal(flushed, undefined, 'flushed, without an error, once all was written')
  t.equal(flushes, 1, 'called back once')
  t.ok(Buffer.concat(read).equals(Buffer.concat(chunks)), 'every byte, in order')
  t.same(errors, [])
  close(readFd)
  out.write(Buffer.from('after the reader left\n'))
  t.match(errors, [{ code: 'EPIPE' }], 'a write with no reader: the error goes to onError')
  const failed = await new Promise<Error | undefined>((resolve) => out.flush(resolve))
  t.match(failed, { code: 'EPIPE' }, 'and a flush calls back with it')
})

t.test('what waits for a stalled reader holds only its own bytes, not the 64 KB chunk a short flush was cut from', async (t) => {
  const { writeFd } = fifoEnds(t)
  const out = new NonBlockingOut(writeFd, (error) => t.fail(error.message))
  // The pipe full, then a flush's chunk: one short line in a chunk's 64 KB buffer.
  out.write(Buffer.alloc(200_000, 120))
  const chunk = Buffer.alloc(65_536, 121)
  out.write(chunk.subarray(0, 100))
  const waiting = out.take()
  t.equal(waiting.length, 2)
  t.equal(waiting[1]!.length, 100)
  // A copy (in Node.js's pool of small buffers, shared with others), not a view of the chunk.
  t.not(waiting[1]!.buffer, chunk.buffer, 'the short line is a copy of its own')
  t.ok(waiting[1]!.equals(Buffer.alloc(100, 121)))
})

t.test('past its limit, what a lagging reader has no room for is dropped, and one warning stands where it would have been', async (t) => {
  const { readFd, writeFd } = fifoEnds(t)
  const out = new NonBlockingOut(writeFd, (error) => t.fail(error.message), 100_000)
  const droppedBefore = logBytesDropped()
  const read: Buffer[] = []
  const text = () => Buffer.concat(read).toString('latin1')
  // The filler has no newline: the lines read are the warnings and the line kept.
  // Each wait ends as soon as its lines are read; the bound is only for a writer that never writes them.
  const WAIT_MS = 30_000
  // More than a pipe holds (64 KB here; 1 MB where pages are 64 KB): its rest waits, past the limit
  // already, so the next chunks are dropped.
  const first = Buffer.alloc(2_000_000, 120)
  out.write(first)
  for (let chunk = 0; chunk < 10; chunk++) out.write(Buffer.alloc(20_000, 121))
  // The reader catches up partly: what waits is under the limit again, and the next line is kept.
  await readUntil(readFd, read, ({ bytes }) => bytes >= 1_900_000, WAIT_MS)
  out.write(Buffer.from('{"msg":"after the gap"}\n'))
  await readUntil(readFd, read, ({ newlines }) => newlines >= 2, WAIT_MS)
  // t.ok, not t.equal: a failing comparison of two 2 MB strings had tap's reporter diffing them for
  // longer than CI waits.
  t.ok(text().slice(0, 2_000_000) === first.toString('latin1'), 'what waited within the limit, whole')
  const [warning, after] = text().slice(2_000_000).split('\n')
  t.match(JSON.parse(warning!), { level: 40, droppedBytes: 200_000, msg: /log lines dropped/ }, 'then the warning, where the dropped lines would have been')
  t.equal(after, '{"msg":"after the gap"}', 'then the line kept after the gap')
  // Another stall, and nothing more kept: the warning comes once what waited is written.
  const second = Buffer.alloc(2_000_000, 122)
  out.write(second)
  for (let chunk = 0; chunk < 3; chunk++) out.write(Buffer.alloc(20_000, 121))
  await readUntil(readFd, read, ({ newlines }) => newlines >= 3, WAIT_MS)
  const rest = text().slice(2_000_000 + warning!.length + after!.length + 2)
  t.ok(rest.slice(0, 2_000_000) === second.toString('latin1'), 'the second stall: what waited, whole')
  t.match(JSON.parse(rest.slice(2_000_000)), { level: 40, droppedBytes: 60_000 }, 'one warning for the second gap, after what waited')
  t.equal(logBytesDropped() - droppedBefore, 260_000, "the process's count of dropped bytes")
  // Twice: a scrape must not add the count to what an earlier one showed.
  for (const scrape of [1, 2]) {
    const metrics = await app.inject({ method: 'GET', url: '/metrics' })
    t.match(metrics.body, new RegExp(`^postback_log_dropped_bytes_total ${logBytesDropped()}$`, 'm'), `and the metric, at scrape ${scrape}`)
  }
})
