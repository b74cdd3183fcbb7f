// Issue 17: the macro shapes real network templates use, and values that mean "no value", refused
// by the receiver; real ids that merely contain '#', '%', '[' or '-' still stored. Tables run as a
// pure function and over HTTP on the real app (PGlite, or PostgreSQL with DATABASE_URL).
import { readFileSync } from 'node:fs'
import t from 'tap'
import { isNoValue, isUnreplacedMacro, NO_VALUE_WORDS } from '../../src/delivery.ts'
import { receiverUrl as trackerReceiverUrl } from '../../src/receiver-url.ts'
import { TRACKERS } from '../../src/schemas/management.ts'
import { newSheet, receiverUrl, testApp } from '../helpers.ts'

// Unreplaced macros as each network's (or template language's) postback template writes them.
const NETWORK_MACROS: Array<[network: string, macro: string]> = [
  ['Keitaro', '{subid}'],
  ['Keitaro', '{status}'],
  ['Keitaro', '{payout}'],
  ['Voluum', '{clickid}'],
  ['Voluum', '{payout}'],
  ['RedTrack', '{clickid}'],
  ['RedTrack', '{sum}'],
  ['Binom', '{clickid}'],
  ['Everflow', '{transaction_id}'],
  ['Everflow', '{aff_click_id}'],
  ['CAKE', '#s2#'],
  ['CAKE', '#price#'],
  ['HasOffers/TUNE', '{aff_sub}'],
  ['HasOffers/TUNE', '{payout}'],
  ['admitad', '[[[subid]]]'],
  ['Affise', '{clickid}'],
  ['PropellerAds', '${SUBID}'],
  ['Outbrain', '{{ob_click_id}}'],
  ['Liquid / Jinja', '{{ click_id }}'],
  ['a filter', '{click_id|default}'],
  ['Handlebars triple', '{{{clickid}}}'],
  ['double percent', '%%CLICK_ID%%'],
  ['dotted name', '{sub_id.1}'],
  ['colon name', '[[aff:sub]]'],
  ['wrapped in text', 'tx-{clickid}'],
  ['unbalanced brackets', '[[subid]]]'],
  ['unbalanced hashes', '##s2#'],
  ['one brace lost', '{clickid'],
]

// Every bracket, brace, percent and hash family at each depth a template language uses.
const SHAPES = ['{x}', '{{x}}', '{{{x}}}', '${x}', '[x]', '[[x]]', '[[[x]]]', '%x%', '%%x%%', '#x#', '##x##']

// Real ids (and amounts) that contain those signs, never as a macro shape: stored as sent.
const REAL_IDS = [
  'ABC#123',
  '#123',
  'a#b#',
  '50%off',
  '100%',
  '50%off%',
  '[2024]-x',
  '[123]',
  'order[1]',
  'abc-def',
  'a b',
  'Zm9v-YmFy_YmF6',
  '9cdf32d5-124e-4e06-b25b-4c92d3cec9dc',
  '1530859076437:902a3631',
  'null-1',
  'nullable',
  'None1',
  'order {',
  'replace-me',
]

// Each "no value" word as networks send it: any case, with spaces around.
const NO_VALUES = ['null', 'NULL', ' null ', 'undefined', 'Undefined', '(null)', '(NULL)', 'nil', 'NIL', '<nil>', 'none', 'None', 'NaN', 'nan']

const app = await testApp(t)

const PARAMETERS = ['sheet_id', 'transaction_id', 'payout', 'currency', 'campaign_id', 'adset_id', 'ad_id'] as const

t.test('isUnreplacedMacro: network macros, every shape with any name, and not the real ids', async (t) => {
  for (const [network, macro] of NETWORK_MACROS) t.ok(isUnreplacedMacro(macro), `${network}: ${macro}`)
  for (const shape of SHAPES) {
    for (const name of ['x', 'clickid', 'CLICK_ID', 'sub_id.1', 'aff-sub', 'ns:click', '_id', 's2']) {
      const macro = shape.replace('x', name)
      t.ok(isUnreplacedMacro(macro), macro)
      t.ok(isUnreplacedMacro(` ${macro} `), `${macro} with spaces around`)
    }
  }
  // Decided: a number is a name between hashes or percent signs (nothing else writes "#1#"), not
  // between brackets ("[1]" is a one-item list); a hash or percent on one side is part of an id.
  for (const macro of ['#1#', '#123#', '%1%', '##1##', '%%10%%']) t.ok(isUnreplacedMacro(macro), macro)
  for (const value of ['[1]', '[[1]]', '#1', '1#', '%1', '1%']) t.notOk(isUnreplacedMacro(value), value)
  for (const value of REAL_IDS) {
    t.notOk(isUnreplacedMacro(value), `${value}: not a macro`)
    t.notOk(isNoValue(value), `${value}: not a no-value word`)
  }
})

t.test('the receiver URL builder fills in macros that the receiver refuses, every one of them', async (t) => {
  for (const tracker of TRACKERS) {
    for (const [parameter, macro] of Object.entries(trackerReceiverUrl('https://x.example', 's', tracker).parameters)) {
      // The sheet's secret is no tracker macro: left as the placeholder, the sheet refuses it as invalid_token.
      if (parameter === 'token') continue
      t.ok(isUnreplacedMacro(macro), `${tracker}: ${parameter}=${macro}`)
    }
  }
})

t.test('isNoValue: the words, trimmed, in any case, only as the whole value', async (t) => {
  for (const value of NO_VALUES) t.ok(isNoValue(value), JSON.stringify(value))
  for (const value of ['', 'nul', 'nulls', 'null1', 'not null', '(nil)', 'n/a', '0', 'nonexistent', 'NaN1']) {
    t.notOk(isNoValue(value), JSON.stringify(value))
  }
})

async function deliver(params: Record<string, string>) {
  const response = await app.inject({ method: 'GET', url: receiverUrl(params) })
  return { status: response.statusCode, body: response.json() }
}

async function deliverRaw(query: string) {
  const response = await app.inject({ method: 'GET', url: `/meta/postback/conversion?${query}` })
  return { status: response.statusCode, body: response.json() }
}

async function storedIds(sheetId: string, column: 'transaction_id' | 'campaign_id' | 'ad_id' = 'transaction_id') {
  const rows = await app.prisma.$queryRaw<Array<Record<string, string | null>>>`
    SELECT transaction_id, campaign_id, ad_id FROM conversions WHERE sheet_id = ${sheetId} ORDER BY id`
  return rows.map((row) => row[column])
}

t.test('HTTP: each network macro in each parameter is refused as unreplaced_macro naming it', async (t) => {
  const sheet = await newSheet(app)
  for (const [network, macro] of NETWORK_MACROS) {
    for (const parameter of PARAMETERS) {
      const { status, body } = await deliver({ sheet_id: sheet, transaction_id: 'ok', [parameter]: macro })
      t.same([status, body.error, body.parameter], [400, 'unreplaced_macro', parameter], `${network}: ${parameter}=${macro}`)
    }
  }
  t.same(await storedIds(sheet), [], 'nothing stored')
})

t.test('HTTP: macros sent unencoded, as a network that did not replace them sends them', async (t) => {
  const sheet = await newSheet(app)
  for (const raw of ['[[[subid]]]', '%%CLICK_ID%%', '%aff_sub%', '${SUBID}', '{{ob_click_id}}', '{subid}']) {
    const { status, body } = await deliverRaw(`sheet_id=${sheet}&transaction_id=${raw}`)
    t.same([status, body.error, body.parameter], [400, 'unreplaced_macro', 'transaction_id'], raw)
    const late = await deliverRaw(`sheet_id=${sheet}&transaction_id=ok&ad_id=${raw}`)
    t.same([late.status, late.body.error, late.body.parameter], [400, 'unreplaced_macro', 'ad_id'], `ad_id=${raw}`)
  }
  // An unencoded '#' starts the URL's fragment, which never reaches the receiver: an id left empty.
  const hashed = await deliverRaw(`sheet_id=${sheet}&transaction_id=#s2#`)
  t.same([hashed.status, hashed.body.error, hashed.body.parameter], [400, 'missing_parameter', 'transaction_id'], 'transaction_id=#s2# unencoded')
  t.same(await storedIds(sheet), [], 'nothing stored')
})

t.test('HTTP: a "no value" word in any parameter is refused as invalid_parameter naming it', async (t) => {
  const sheet = await newSheet(app)
  for (const value of NO_VALUES) {
    for (const parameter of PARAMETERS) {
      const { status, body } = await deliver({ sheet_id: sheet, transaction_id: 'ok', [parameter]: value })
      t.same([status, body.error, body.parameter], [400, 'invalid_parameter', parameter], `${parameter}=${JSON.stringify(value)}`)
      t.match(body.message, `the network's template produced no value for ${parameter}`, `${parameter}=${JSON.stringify(value)}: message`)
    }
  }
  // The reason this matters: a stored "null" would make every later "null" a duplicate of it.
  const first = await deliver({ sheet_id: sheet, transaction_id: 'null', payout: '1' })
  const second = await deliver({ sheet_id: sheet, transaction_id: 'null', payout: '2' })
  t.same([first.status, second.status], [400, 400])
  t.same(await storedIds(sheet), [], 'nothing stored')
  // An optional parameter sent empty still counts as absent.
  const empty = await deliver({ sheet_id: sheet, transaction_id: 'empty-ok', payout: '', ad_id: '' })
  t.same([empty.status, empty.body.status], [200, 'stored'])
})

t.test('HTTP: real ids containing #, %, [ or - are stored as sent', async (t) => {
  const sheet = await newSheet(app)
  for (const id of REAL_IDS) {
    const { status, body } = await deliver({ sheet_id: sheet, transaction_id: id, campaign_id: id, adset_id: id, ad_id: id })
    t.same([status, body.status], [200, 'stored'], `${id}: ${body.message ?? ''}`)
  }
  // Sent unencoded where that is valid: '%20' decodes to a space.
  const raw = await deliverRaw(`sheet_id=${sheet}&transaction_id=a%20b-raw&ad_id=[2024]-raw`)
  t.same([raw.status, raw.body.status], [200, 'stored'])
  t.same(await storedIds(sheet), [...REAL_IDS, 'a b-raw'])
  t.same(await storedIds(sheet, 'ad_id'), [...REAL_IDS, '[2024]-raw'])
  t.same(await storedIds(sheet, 'campaign_id'), [...REAL_IDS, null])
})

t.test('README: the receiver section lists what the code refuses and what it stores', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## The receiver'), readme.indexOf('\n## ', readme.indexOf('## The receiver') + 1))
  const spans = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((match) => match[1]!)
  const bullets = section.split(/\n- /).slice(1).map((bullet) => bullet.split('\n\n')[0]!)
  const macroBullets = bullets.filter((bullet) => bullet.includes('`unreplaced_macro`'))
  const noValueBullet = bullets.find((bullet) => bullet.includes('word for no value'))
  t.equal(macroBullets.length, 2, 'two macro bullets')
  t.ok(noValueBullet, 'the no-value bullet')

  const macros = macroBullets.flatMap(spans).filter((span) => span !== 'unreplaced_macro')
  t.ok(macros.length >= 15, `${macros.length} macro examples`)
  for (const shape of SHAPES) t.ok(macros.includes(shape), `the README lists ${shape}`)
  for (const macro of macros) t.ok(isUnreplacedMacro(macro), `README macro ${macro} is refused`)

  const words = spans(noValueBullet ?? '').filter((span) => span !== 'invalid_parameter')
  t.same(words, [...NO_VALUE_WORDS], 'README no-value words = the code’s')
  for (const word of words) t.ok(isNoValue(word), `README word ${word} is refused`)

  const stored = spans(section.slice(section.indexOf('are ids and are stored:')).split('\n\n')[0]!)
  t.ok(stored.length >= 5, `${stored.length} stored examples`)
  for (const id of stored) t.ok(!isUnreplacedMacro(id) && !isNoValue(id), `README id ${id} is stored`)
})
