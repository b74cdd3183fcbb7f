// Property-based tests (fast-check) over the receiver's parameters and raw URLs: every invalid
// request gets a 4xx (never a 5xx) and stores nothing; every valid one is stored equal to its input.
import { once } from 'node:events'
import { connect } from 'node:net'
import fc from 'fast-check'
import t from 'tap'
import { CURRENCIES } from '../../src/currencies.ts'
import { isNoValue, isUnreplacedMacro, NO_VALUE_WORDS } from '../../src/delivery.ts'
import { listen, newKeyHeader, newSheet, receiverUrl, testApp } from '../helpers.ts'

const app = await testApp(t, { RECEIVER_RATE_LIMIT: '100000000', RECEIVER_FLOOD_LIMIT: '100000000' })
const sheet = await newSheet(app, 'EUR')
const RUNS = Number(process.env.FUZZ_RUNS ?? 150)

const rows = async (transactionId?: string) =>
  app.prisma.$queryRaw<Array<Record<string, string | null>>>`
    SELECT transaction_id, payout::text AS payout, currency::text AS currency, campaign_id, adset_id, ad_id
    FROM conversions WHERE sheet_id = ${sheet} AND (${transactionId ?? null}::text IS NULL OR transaction_id = ${transactionId ?? null})`
// Rows of this file's sheet only: on PostgreSQL other test files write to the same tables meanwhile.
const count = async () => (await app.prisma.$queryRaw<Array<{ n: number }>>`SELECT count(*)::int AS n FROM conversions WHERE sheet_id = ${sheet}`)[0]!.n

// A printable identifier: any Unicode text without control characters, not blank, not a macro,
// not a word for no value.
const identifier = (maxLength: number) =>
  fc
    .string({ unit: 'grapheme', minLength: 1, maxLength })
    // eslint-disable-next-line no-control-regex -- control characters are exactly what it strips
    .map((text) => text.replace(/[\u0000-\u001F\u007F-\u009F]/g, ''))
    .filter((text) => text.trim() !== '' && text.length <= maxLength && !isUnreplacedMacro(text) && !isNoValue(text))

// A payout and its expected stored form: sign, integer digits (with leading zeros), fraction digits.
const payout = fc
  .tuple(fc.constantFrom('', '+', '-'), fc.stringMatching(/^[0-9]{1,12}$/), fc.option(fc.stringMatching(/^[0-9]{0,6}$/), { nil: undefined }))
  .map(([sign, integer, fraction]) => {
    const sent = `${sign}${integer}${fraction === undefined ? '' : `.${fraction}`}`
    const digits = `${integer.replace(/^0+(?=\d)/, '')}${fraction ? `.${fraction}` : ''}`
    const zero = /^[0.]*$/.test(digits)
    return { sent, stored: sign === '-' && !zero ? `-${digits}` : digits }
  })

const currency = fc.constantFrom(...CURRENCIES).chain((code) => fc.constantFrom(code, code.toLowerCase(), `${code[0]!.toLowerCase()}${code.slice(1)}`))

let sequence = 0
const delivery = fc.record(
  {
    transaction_id: identifier(200),
    payout,
    currency,
    campaign_id: identifier(60),
    adset_id: identifier(60),
    ad_id: identifier(60),
  },
  { requiredKeys: ['transaction_id'] },
)

t.test('every valid delivery is stored once, equal to its input', async (t) => {
  await fc.assert(
    fc.asyncProperty(delivery, async (input) => {
      const transactionId = `${sequence++}:${input.transaction_id}`
      const params: Record<string, string> = { sheet_id: sheet, transaction_id: transactionId }
      for (const name of ['campaign_id', 'adset_id', 'ad_id'] as const) if (input[name] !== undefined) params[name] = input[name]
      if (input.payout) params.payout = input.payout.sent
      if (input.currency) params.currency = input.currency
      const response = await app.inject({ method: 'GET', url: receiverUrl(params) })
      if (response.statusCode !== 200) throw new Error(`${response.statusCode} ${response.body} for ${JSON.stringify(params)}`)
      const stored = await rows(transactionId)
      const expected = {
        transaction_id: transactionId,
        payout: input.payout?.stored ?? null,
        currency: input.currency?.toUpperCase() ?? 'EUR',
        campaign_id: input.campaign_id ?? null,
        adset_id: input.adset_id ?? null,
        ad_id: input.ad_id ?? null,
      }
      t.same(stored, [expected])
      return true
    }),
    { numRuns: RUNS },
  )
})

// One parameter made invalid in one of the ways networks get it wrong.
const macroName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,15}$/)
const macro = fc.oneof(
  macroName.map((n) => `{${n}}`),
  macroName.map((n) => `{{${n}}}`),
  macroName.map((n) => `{{{${n}}}}`),
  macroName.map((n) => `{{ ${n} }}`),
  macroName.map((n) => `\${${n}}`),
  macroName.map((n) => `[${n}]`),
  macroName.map((n) => `[[${n}]]`),
  macroName.map((n) => `[[[${n}]]]`),
  macroName.map((n) => `%${n}%`),
  macroName.map((n) => `%%${n}%%`),
  macroName.map((n) => `#${n}#`),
  macroName.map((n) => `##${n}##`),
  fc.constantFrom('REPLACE', 'OPTIONAL'),
)
const noValue = fc.constantFrom(...NO_VALUE_WORDS).chain((word) => fc.constantFrom(word, word.toUpperCase(), ` ${word} `))
// Not blank: a value of whitespace only ("\t") is an empty one, which an optional parameter may be.
const controlled = fc
  .tuple(fc.string({ maxLength: 10 }), fc.integer({ min: 0, max: 0x1f }), fc.string({ maxLength: 10 }))
  .map(([a, c, b]) => `${a}${String.fromCharCode(c)}${b}`)
  .filter((text) => text.trim() !== '')
const badPayout = fc.oneof(
  fc.string({ minLength: 1, maxLength: 20 }).filter((text) => text.trim() !== '' && !/^[+-]?(\d+(\.\d{0,6})?|\.\d{1,6})$/.test(text)),
  fc.constantFrom('1e308', '-1e-300', 'Infinity', 'NaN', '0x1F', '1,5', '1.2.3', '1000000000000', '0.0000001', '99999999999999999999999', ' 1', '1 '),
)
const badCurrency = fc.oneof(
  fc.string({ minLength: 1, maxLength: 6 }).filter((text) => text.trim() !== '' && !CURRENCIES.has(text.toUpperCase()) && !isUnreplacedMacro(text)),
  fc.constantFrom('XXX', 'ABC', 'US', 'USDT', 'BTC'),
)
const corruption = fc.oneof(
  fc.record({ parameter: fc.constantFrom('transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id'), value: fc.oneof(macro, controlled) }),
  fc.record({ parameter: fc.constantFrom('sheet_id', 'transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id'), value: noValue }),
  fc.record({ parameter: fc.constant('payout'), value: badPayout }),
  fc.record({ parameter: fc.constant('currency'), value: badCurrency }),
  fc.record({ parameter: fc.constantFrom('transaction_id', 'campaign_id'), value: fc.integer({ min: 256, max: 3000 }).map((n) => 'x'.repeat(n)) }),
  fc.record({ parameter: fc.constantFrom('transaction_id', 'payout', 'sheet_id'), value: fc.array(fc.string({ maxLength: 5 }), { minLength: 2, maxLength: 4 }) }),
  fc.record({ parameter: fc.constant('transaction_id'), value: fc.constantFrom('', '   ') }),
)

t.test('every invalid delivery gets a 4xx naming the parameter, and stores nothing', async (t) => {
  const before = await count()
  await fc.assert(
    fc.asyncProperty(corruption, async ({ parameter, value }) => {
      const params: Record<string, string | string[]> = { sheet_id: sheet, transaction_id: `bad-${sequence++}`, payout: '1.00' }
      params[parameter] = value
      const response = await app.inject({ method: 'GET', url: receiverUrl(params) })
      if (response.statusCode < 400 || response.statusCode >= 500) throw new Error(`${response.statusCode} for ${JSON.stringify(params)}`)
      const body = response.json()
      if (body.parameter !== parameter) throw new Error(`named ${body.parameter}, not ${parameter}: ${response.body}`)
      return true
    }),
    { numRuns: RUNS * 2 },
  )
  t.equal(await count(), before, 'no row stored')
})

t.test('raw query strings (random text, bytes, percent-encodings) get a 4xx, never a 5xx, and store no row', async (t) => {
  const before = await count()
  const rawText = fc.string({ unit: 'binary', maxLength: 300 })
  const percentBytes = fc.uint8Array({ maxLength: 40 }).map((bytes) => [...bytes].map((b) => `%${b.toString(16).padStart(2, '0')}`).join(''))
  const query = fc.oneof(
    rawText.map((text) => encodeURI(text).replace(/%25/g, '%')),
    fc.tuple(percentBytes, percentBytes).map(([a, b]) => `sheet_id=${a}&transaction_id=${b}`),
    fc.array(fc.tuple(fc.constantFrom('sheet_id', 'transaction_id', 'payout', 'currency', 'x'), fc.string({ maxLength: 8 })), { maxLength: 8 }).map((pairs) =>
      pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&'),
    ),
  )
  await fc.assert(
    fc.asyncProperty(query, async (raw) => {
      const response = await app.inject({ method: 'GET', url: `/meta/postback/conversion?${raw}` })
      // None names this file's sheet with a valid transaction, so each is refused with a 4xx.
      if (response.statusCode < 400 || response.statusCode >= 500) throw new Error(`${response.statusCode} ${response.body} for ?${raw}`)
      JSON.parse(response.body)
      return true
    }),
    { numRuns: RUNS * 2 },
  )
  t.equal(await count(), before, 'no row stored')
})

t.test('oversized requests are refused early, over a real connection', async (t) => {
  const baseUrl = await listen(app)
  const long = await fetch(`${baseUrl}${receiverUrl({ sheet_id: sheet, transaction_id: 'x'.repeat(20_000) })}`)
  t.equal(long.status, 431, 'a URL beyond the header limit: 431')
  // A refused body is answered, and the connection closed, before the client has sent all of it: a
  // client that stops at the failed send (fetch does, now and then) never reads the answer. This one
  // sends what it can and reads what comes back.
  const { authorization } = await newKeyHeader(app, { global: true })
  t.equal(await postStatus(baseUrl, { authorization }, 'x'.repeat(100_000)), 413, 'a body over 64 KiB: 413')
  t.equal(await postStatus(baseUrl, {}, 'x'.repeat(100_000)), 401, 'without a key: 401 before the body is read')
})

/** POSTs a JSON body to /api/v1/postback/admin/sheets over a plain socket; the answer's status code. */
async function postStatus(baseUrl: string, headers: Record<string, string>, body: string): Promise<number> {
  const { hostname, port } = new URL(baseUrl)
  const socket = connect(Number(port), hostname)
  const received: Buffer[] = []
  socket.on('data', (chunk: Buffer) => received.push(chunk))
  // The server may close while the body is still being sent (EPIPE, ECONNRESET): the answer counts.
  socket.on('error', () => {})
  const head = [
    'POST /api/v1/postback/admin/sheets HTTP/1.1',
    `Host: ${hostname}:${port}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
  ].join('\r\n')
  socket.write(`${head}\r\n\r\n`)
  socket.end(body)
  await once(socket, 'close')
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(Buffer.concat(received).toString('latin1'))
  return status ? Number(status[1]) : 0
}
