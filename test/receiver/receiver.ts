import { randomUUID } from 'node:crypto'
import { Value } from '@sinclair/typebox/value'
import { TypeRegistry, type TObject, type TSchema } from '@sinclair/typebox'
import t from 'tap'
import { ErrorBody } from '../../src/schemas/common.ts'
import { receiverRouteSchema } from '../../src/schemas/receiver.ts'
import { disableSheet } from '../../src/sheets.ts'
import { STATUSES } from '../../src/lifecycle.ts'
import { Accepted, serializeAnswer } from '../../plugins/receiver.ts'
import { keysNotStoredOnce, newKeyHeader, newSheet, receiverUrl, testApp, uniqueId } from '../helpers.ts'

const app = await testApp(t)

async function deliver(params: Record<string, string | string[]>) {
  const response = await app.inject({ method: 'GET', url: receiverUrl(params) })
  return { status: response.statusCode, body: response.json(), headers: response.headers }
}

async function storedRows(sheetId: string) {
  return app.prisma.$queryRaw<Array<Record<string, string | null>>>`
    SELECT id::text, transaction_id, payout::text, currency, campaign_id, adset_id, ad_id
    FROM conversions WHERE sheet_id = ${sheetId} ORDER BY id`
}

t.test("the answer to a delivery, written by hand, is JSON.stringify's text of the same fields", async (t) => {
  for (const status of ['stored', 'updated', 'duplicate'] as const) {
    for (const conversionStatus of STATUSES) {
      for (const id of ['1', '9223372036854775807']) {
        const fields = { status, conversion_id: id, conversion_status: conversionStatus }
        t.equal(serializeAnswer(new Accepted(status, id, conversionStatus)), JSON.stringify(fields), `${status}, ${conversionStatus}, ${id}`)
      }
    }
  }
  t.equal(serializeAnswer({ status: 'test', conversion_status: 'pending' }), '{"status":"test","conversion_status":"pending"}', 'any other answer: JSON.stringify')
})

t.test('a first delivery is stored with every field as sent, and read back exactly', async (t) => {
  const sheet = await newSheet(app)
  const delivery = {
    sheet_id: sheet,
    transaction_id: 'tx-1/ü',
    payout: '12.50',
    currency: 'eur',
    campaign_id: '120210000000000001',
    adset_id: '120210000000000002',
    ad_id: '120210000000000003',
  }
  const { status, body } = await deliver(delivery)
  t.equal(status, 200)
  t.equal(body.status, 'stored')
  t.match(body.conversion_id, /^\d+$/)
  t.same(await storedRows(sheet), [
    {
      id: body.conversion_id,
      transaction_id: 'tx-1/ü',
      payout: '12.50',
      currency: 'EUR',
      campaign_id: '120210000000000001',
      adset_id: '120210000000000002',
      ad_id: '120210000000000003',
    },
  ])
})

t.test('a repeat is a duplicate with the first row id and changes nothing', async (t) => {
  const sheet = await newSheet(app)
  const first = await deliver({ sheet_id: sheet, transaction_id: 'tx', payout: '1.00' })
  const again = await deliver({ sheet_id: sheet, transaction_id: 'tx', payout: '99', currency: 'GBP', ad_id: '5' })
  t.same(again, { ...again, status: 200, body: { status: 'duplicate', conversion_id: first.body.conversion_id, conversion_status: 'approved' } })
  const rows = await storedRows(sheet)
  t.equal(rows.length, 1)
  t.same([rows[0]?.payout, rows[0]?.currency, rows[0]?.ad_id], ['1.00', 'USD', null])
})

t.test('the same transaction id in two sheets is two conversions', async (t) => {
  const [a, b] = [await newSheet(app), await newSheet(app)]
  const first = await deliver({ sheet_id: a, transaction_id: 'shared' })
  const second = await deliver({ sheet_id: b, transaction_id: 'shared' })
  t.equal(first.body.status, 'stored')
  t.equal(second.body.status, 'stored')
  t.not(first.body.conversion_id, second.body.conversion_id)
})

t.test('currency defaults to the sheet currency; optional parameters sent empty count as absent', async (t) => {
  const sheet = await newSheet(app, 'BRL')
  const { status } = await deliver({ sheet_id: sheet, transaction_id: 't', payout: '', currency: '', campaign_id: '', adset_id: '', ad_id: '' })
  t.equal(status, 200)
  t.same(await storedRows(sheet).then((rows) => rows.map(({ id, ...row }) => row)), [
    { transaction_id: 't', payout: null, currency: 'BRL', campaign_id: null, adset_id: null, ad_id: null },
  ])
})

t.test('unknown parameters are ignored', async (t) => {
  const sheet = await newSheet(app)
  const { status, body } = await deliver({ sheet_id: sheet, transaction_id: 'x', sub1: '{sub1}', goal: 'approved' })
  t.equal(status, 200)
  t.equal(body.status, 'stored')
})

t.test('payout is kept as an exact decimal, canonical in sign and leading zeros', async (t) => {
  const sheet = await newSheet(app)
  const cases: Array<[string, string]> = [
    ['0.000001', '0.000001'],
    ['999999999999.999999', '999999999999.999999'],
    ['-5.25', '-5.25'],
    ['+7', '7'],
    ['007.10', '7.10'],
    ['.5', '0.5'],
    ['3.', '3'],
    ['-0.00', '0.00'],
  ]
  for (const [sent, stored] of cases) {
    const { status } = await deliver({ sheet_id: sheet, transaction_id: `p${sent}`, payout: sent })
    t.equal(status, 200, `payout ${sent} accepted`)
    const [row] = await app.prisma.$queryRaw<Array<{ payout: string }>>`
      SELECT payout::text FROM conversions WHERE sheet_id = ${sheet} AND transaction_id = ${`p${sent}`}`
    t.equal(row?.payout, stored, `payout ${sent} stored as ${stored}`)
  }
})

t.test('bad input: 400 naming the parameter and the problem, nothing stored', async (t) => {
  const sheet = await newSheet(app)
  const cases: Array<[string, Record<string, string | string[]>, string, string]> = [
    ['no transaction_id', { sheet_id: sheet }, 'missing_parameter', 'transaction_id'],
    ['empty transaction_id', { sheet_id: sheet, transaction_id: '' }, 'missing_parameter', 'transaction_id'],
    ['blank transaction_id', { sheet_id: sheet, transaction_id: '   ' }, 'missing_parameter', 'transaction_id'],
    ['no sheet_id', { transaction_id: 'a' }, 'missing_parameter', 'sheet_id'],
    ['payout with a comma', { sheet_id: sheet, transaction_id: 'a', payout: '12,50' }, 'invalid_parameter', 'payout'],
    ['payout not a number', { sheet_id: sheet, transaction_id: 'a', payout: 'abc' }, 'invalid_parameter', 'payout'],
    ['payout with exponent', { sheet_id: sheet, transaction_id: 'a', payout: '1e5' }, 'invalid_parameter', 'payout'],
    ['payout with 7 fraction digits', { sheet_id: sheet, transaction_id: 'a', payout: '1.0000001' }, 'invalid_parameter', 'payout'],
    ['payout of 10^12', { sheet_id: sheet, transaction_id: 'a', payout: '1000000000000' }, 'invalid_parameter', 'payout'],
    ['payout NaN', { sheet_id: sheet, transaction_id: 'a', payout: 'NaN' }, 'invalid_parameter', 'payout'],
    ['payout Infinity', { sheet_id: sheet, transaction_id: 'a', payout: '-Infinity' }, 'invalid_parameter', 'payout'],
    ['currency of 4 letters', { sheet_id: sheet, transaction_id: 'a', currency: 'USDT' }, 'invalid_parameter', 'currency'],
    ['currency not ISO 4217', { sheet_id: sheet, transaction_id: 'a', currency: 'XYZ' }, 'unknown_currency', 'currency'],
    ['repeated transaction_id', { sheet_id: sheet, transaction_id: ['a', 'b'] }, 'repeated_parameter', 'transaction_id'],
    ['repeated payout, same value', { sheet_id: sheet, transaction_id: 'a', payout: ['1', '1'] }, 'repeated_parameter', 'payout'],
    ['control character', { sheet_id: sheet, transaction_id: 'a\u0000b' }, 'invalid_parameter', 'transaction_id'],
    ['newline in ad_id', { sheet_id: sheet, transaction_id: 'a', ad_id: '1\n2' }, 'invalid_parameter', 'ad_id'],
    ['transaction_id too long', { sheet_id: sheet, transaction_id: 'x'.repeat(256) }, 'invalid_parameter', 'transaction_id'],
    ['campaign_id too long', { sheet_id: sheet, transaction_id: 'a', campaign_id: '1'.repeat(256) }, 'invalid_parameter', 'campaign_id'],
  ]
  for (const [name, params, code, parameter] of cases) {
    const { status, body, headers } = await deliver(params)
    t.equal(status, 400, `${name}: status`)
    t.match(headers['content-type'], /application\/json/, `${name}: JSON body`)
    t.same([body.error, body.parameter], [code, parameter], `${name}: ${body.message}`)
    t.match(body.message, parameter, `${name}: the message names the parameter`)
  }
  t.same(await storedRows(sheet), [], 'no row stored')
})

t.test('unreplaced tracker macros are rejected as such', async (t) => {
  const sheet = await newSheet(app)
  const macros = ['{transaction_id}', '{{clickid}}', '${payout}', '[payout]', '[[sum]]', '%payout%', '#payout#', '##payout##', 'REPLACE', 'OPTIONAL', 'replace', '{}', 'abc-{clickid}']
  for (const macro of macros) {
    for (const parameter of ['transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id']) {
      const params: Record<string, string> = { sheet_id: sheet, transaction_id: 'ok', [parameter]: macro }
      const { status, body } = await deliver(params)
      t.same([status, body.error, body.parameter], [400, 'unreplaced_macro', parameter], `${parameter}=${macro}`)
    }
  }
  const { body } = await deliver({ sheet_id: '{sheet_id}', transaction_id: 'ok' })
  t.same([body.error, body.parameter], ['unreplaced_macro', 'sheet_id'])
  t.same(await storedRows(sheet), [], 'no row stored')
})

t.test('raw (undecoded) macros and invalid percent-encoding are told apart', async (t) => {
  const sheet = await newSheet(app)
  const raw = async (query: string) => {
    const response = await app.inject({ method: 'GET', url: `/meta/postback/conversion?sheet_id=${sheet}&${query}` })
    return [response.statusCode, response.json().error, response.json().parameter]
  }
  t.same(await raw('transaction_id=%click_id%'), [400, 'unreplaced_macro', 'transaction_id'])
  t.same(await raw('transaction_id=ok&ad_id=%ad_id%'), [400, 'unreplaced_macro', 'ad_id'])
  t.same(await raw('transaction_id=a%ZZb'), [400, 'invalid_parameter', 'transaction_id'])
  t.same(await raw('transaction_id=a%C3'), [400, 'invalid_parameter', 'transaction_id'])
  t.same(await raw('transaction_id=%7Bclickid%7D'), [400, 'unreplaced_macro', 'transaction_id'])
  t.same(await raw('transaction_id=a+b%2Bc'), [200, undefined, undefined])
  const rows = await storedRows(sheet)
  t.same(rows.map((row) => row.transaction_id), ['a b+c'])
})

t.test('values that merely look bracketed are not macros', async (t) => {
  const sheet = await newSheet(app)
  for (const value of ['[123]', '50%', 'a#1', 'order {', 'replace-me']) {
    const { status } = await deliver({ sheet_id: sheet, transaction_id: value })
    t.equal(status, 200, value)
  }
})

t.test('an unknown or disabled sheet gets 404 unknown_sheet', async (t) => {
  const unknown = await deliver({ sheet_id: uniqueId('nope'), transaction_id: 'a' })
  t.same([unknown.status, unknown.body.error, unknown.body.parameter], [404, 'unknown_sheet', 'sheet_id'])

  const sheet = await newSheet(app)
  const before = await deliver({ sheet_id: sheet, transaction_id: 'kept' })
  t.equal(before.status, 200)
  await disableSheet(app.prisma, sheet)
  const fresh = await deliver({ sheet_id: sheet, transaction_id: 'new' })
  const repeat = await deliver({ sheet_id: sheet, transaction_id: 'kept' })
  t.same([fresh.status, fresh.body.error], [404, 'unknown_sheet'])
  t.same([repeat.status, repeat.body.error], [404, 'unknown_sheet'])
  t.equal((await storedRows(sheet)).length, 1)
})

t.test('50 concurrent identical deliveries: all 200, one stored, 49 duplicates, all naming the one row', async (t) => {
  const sheet = await newSheet(app)
  const params = { sheet_id: sheet, transaction_id: randomUUID(), payout: '3.30' }
  const results = await Promise.all(Array.from({ length: 50 }, () => deliver(params)))
  t.same(new Set(results.map((r) => r.status)), new Set([200]))
  const rows = await storedRows(sheet)
  t.equal(rows.length, 1)
  // "One row" holds by the unique index alone; the answers are what the writer decides.
  t.same(keysNotStoredOnce(results.map((r) => ({ key: params.transaction_id, status: r.body.status }))), [], 'one stored answer, 49 duplicates')
  t.same(new Set(results.map((r) => r.body.conversion_id)), new Set([rows[0]?.id]), "every answer's conversion_id is the row's id")
})

t.test('a concurrent burst of distinct and repeated deliveries: one row per key, one stored answer per key, ids agree', async (t) => {
  const [a, b] = [await newSheet(app), await newSheet(app, 'EUR')]
  const requests = Array.from({ length: 300 }, (_, i) => ({
    sheet_id: i % 2 ? a : b,
    transaction_id: `t${i % 120}`,
    payout: `${i % 120}.5`,
  }))
  const results = await Promise.all(requests.map(deliver))
  t.same(new Set(results.map((r) => r.status)), new Set([200]))
  const rows = [...(await storedRows(a)), ...(await storedRows(b))]
  t.equal(rows.length, 120)
  // Transaction ids differ between the two sheets (odd ones go to a), so they name the keys.
  const answers = results.map((result, i) => ({ key: requests[i]!.transaction_id, status: result.body.status }))
  t.same(keysNotStoredOnce(answers), [], 'each key: one stored answer, the rest duplicate')
  const rowId = new Map(rows.map((row) => [row.transaction_id, row.id]))
  t.same(results.filter((result, i) => result.body.conversion_id !== rowId.get(requests[i]!.transaction_id)), [], "every answer's conversion_id is its key's row id")
})

t.test('every answer is JSON, including unknown routes and malformed paths', async (t) => {
  const response = await app.inject({ method: 'GET', url: '/nowhere' })
  t.equal(response.statusCode, 404)
  t.same(response.json().error, 'not_found')
  const badPath = await app.inject({ method: 'GET', url: '/meta/postback/conversion%' })
  t.equal(badPath.statusCode, 400)
  t.same(Object.keys(badPath.json()), ['error', 'message'])
})

t.test('HEAD does not store a conversion', async (t) => {
  const sheet = await newSheet(app)
  const head = await app.inject({ method: 'HEAD', url: receiverUrl({ sheet_id: sheet, transaction_id: 'h' }) })
  t.equal(head.statusCode, 404)
  t.same(await storedRows(sheet), [])
})

t.test("every kind of answer is what the route's schema documents for its status, with no other field", async (t) => {
  const sheet = await newSheet(app)
  const admin = await newKeyHeader(app, { global: true })
  const locked = await newSheet(app)
  await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${locked}/token`, headers: admin })
  const answers: Array<[Record<string, string>, number, string]> = [
    [{ sheet_id: sheet, transaction_id: 'S-1', status: 'lead', payout: '1.5' }, 200, 'stored'],
    [{ sheet_id: sheet, transaction_id: 'S-1', status: 'lead' }, 200, 'duplicate'],
    [{ sheet_id: sheet, transaction_id: 'S-1', status: 'sale' }, 200, 'updated'],
    [{ sheet_id: sheet, transaction_id: 'S-2', test: '1' }, 200, 'test'],
    [{ sheet_id: sheet }, 400, 'missing_parameter'],
    [{ sheet_id: locked, transaction_id: 'S-3' }, 403, 'invalid_token'],
    [{ sheet_id: 'no-such-sheet', transaction_id: 'S-4' }, 404, 'unknown_sheet'],
  ]
  const documented = receiverRouteSchema.response as Record<number, TSchema>
  // The schemas' string lists (StringEnum) are TypeBox's Unsafe kind, which its checker leaves to us.
  if (!TypeRegistry.Has('Unsafe')) {
    TypeRegistry.Set<{ enum?: unknown[] }>('Unsafe', (schema, value) => {
      if (!Array.isArray(schema.enum)) throw new Error(`no check for ${JSON.stringify(schema)}`)
      return schema.enum.includes(value)
    })
  }
  /** The answer is its kind, and what the schema documents for its status: one branch, its fields and no others. */
  const documentedAnswer = (response: { statusCode: number; json(): unknown }, statusCode: number, kind: string) => {
    t.equal(response.statusCode, statusCode, kind)
    const body = response.json() as Record<string, unknown>
    t.equal(body.status ?? body.error, kind)
    const schema = statusCode === 200 ? documented[200]! : ErrorBody
    t.ok(Value.Check(schema, [ErrorBody], body), `${kind}: ${JSON.stringify(body)}`)
    const branches = ((schema as { anyOf?: TObject[] }).anyOf ?? [schema as TObject]).filter((branch) => Value.Check(branch, body))
    t.equal(branches.length, 1, `${kind}: one branch`)
    t.same(Object.keys(body).filter((key) => !(key in branches[0]!.properties)), [], `${kind}: no undocumented field`)
  }
  for (const [params, statusCode, kind] of answers) documentedAnswer(await app.inject({ method: 'GET', url: receiverUrl(params) }), statusCode, kind)
  // A 429, from another app whose sheet limit is one delivery a minute.
  const limited = await testApp(t, { RECEIVER_RATE_LIMIT: '1' })
  const limitedSheet = await newSheet(limited)
  const over = await Promise.all(['L-1', 'L-2'].map((id) => limited.inject({ method: 'GET', url: receiverUrl({ sheet_id: limitedSheet, transaction_id: id }) })))
  const refused = over.find((response) => response.statusCode === 429)
  t.ok(refused, 'one of two is over the limit')
  documentedAnswer(refused!, 429, 'rate_limited')
})
