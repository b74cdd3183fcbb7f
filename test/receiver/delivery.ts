// The receiver's validation rules, as a pure function (the HTTP contract is in receiver.ts).
import t from 'tap'
import { isUnreplacedMacro, normalizePayout, parseDelivery, parsePayout } from '../../src/delivery.ts'
import { MalformedValue, parseQueryString } from '../../src/query-string.ts'

t.test('the query-string parser keeps repeats, decodes, and marks malformed encodings', async (t) => {
  const query = parseQueryString('a=1&a=2&b=x+y%20z&c=%E2%82%AC&d=%ZZ&e&__proto__=p&=v&&%ZZ=x')
  t.same(query.a, ['1', '2'])
  t.equal(query.b, 'x y z')
  t.equal(query.c, '€')
  t.ok(query.d instanceof MalformedValue)
  t.equal(String(query.d), '%ZZ')
  t.equal(query.e, '')
  t.same(Object.keys(query), ['a', 'b', 'c', 'd', 'e', '__proto__', ''], 'a name that cannot be decoded is left out')
  // eslint-disable-next-line no-proto -- the parameter of that name, not the prototype
  t.equal(query.__proto__, 'p', 'a parameter named __proto__ is a plain parameter')
  t.notOk('toString' in query, 'nothing is inherited')
  t.equal(Object.getPrototypeOf(Object.getPrototypeOf(query)), null)
})

t.test('payout canonical form keeps the scale as sent', async (t) => {
  t.equal(parsePayout('12.50'), '12.50')
  t.equal(parsePayout('-0'), '0')
  t.equal(parsePayout('000.000100'), '0.000100')
  t.equal(parsePayout('999999999999'), '999999999999')
  t.throws(() => parsePayout('1000000000000'), { code: 'invalid_parameter', parameter: 'payout' })
  t.throws(() => parsePayout(' 1'), { code: 'invalid_parameter' })
  t.throws(() => parsePayout('1.2.3'), { code: 'invalid_parameter' })
  t.throws(() => parsePayout('.'), { code: 'invalid_parameter' })
  t.throws(() => parsePayout('-'), { code: 'invalid_parameter' })
  t.throws(() => parsePayout('0x10'), { code: 'invalid_parameter' })
  t.throws(() => parsePayout('１２'), { code: 'invalid_parameter' }, 'full-width digits are not digits here')
})

t.test('a payout taken as it is sent is one the full check would give back unchanged', async (t) => {
  // Every shape of digits, signs, dots and zeros up to 14 characters, as random strings: parsePayout
  // returns some as they are; each must be what the full check (normalizePayout) makes of it.
  const alphabet = ['0', '0', '1', '9', '.', '-', '+', '5']
  let random = 7
  const next = () => (random = (random * 1103515245 + 12345) % 2 ** 31)
  let taken = 0
  const differ: string[] = []
  for (let i = 0; i < 50_000; i++) {
    let input = ''
    for (let length = 1 + (next() % 14); length > 0; length--) input += alphabet[next() % alphabet.length]
    let full: string | undefined
    try {
      full = normalizePayout(input)
    } catch {
      full = undefined
    }
    let fast: string | undefined
    try {
      fast = parsePayout(input)
    } catch {
      fast = undefined
    }
    if (fast !== full && differ.length < 10) differ.push(`${JSON.stringify(input)}: ${fast} against ${full}`)
    if (full === input) taken++
  }
  t.same(differ, [])
  t.ok(taken > 1000, `${taken} inputs were already canonical`)
  t.equal(parsePayout('0.5'), '0.5')
  t.equal(parsePayout('120.000001'), '120.000001')
})

t.test('macro detection', async (t) => {
  for (const value of ['{a}', '{{a}}', '${a}', '[a]', '[[a]]', '%a%', '#a#', '##a##', '{ a }', 'x{a}y', '{1}', '{sub id}', '{$payout}', 'REPLACE', 'Optional']) {
    t.ok(isUnreplacedMacro(value), value)
  }
  for (const value of ['a', '[1]', '%', '100%', '50%off%', '#1', 'a#b', 'a#b#', 'order[abc]', 'REPLACED', '{', '}{', 'x[1]']) {
    t.notOk(isUnreplacedMacro(value), value)
  }
})

t.test('parameters are checked in a fixed order and the first problem is named', async (t) => {
  t.throws(() => parseDelivery(parseQueryString('payout=x')), { code: 'missing_parameter', parameter: 'sheet_id' })
  t.throws(() => parseDelivery(parseQueryString('sheet_id=s&payout=x')), { code: 'missing_parameter', parameter: 'transaction_id' })
  t.same(parseDelivery(parseQueryString('sheet_id=s&transaction_id=t&currency=usd&payout=%2B1.0')), {
    sheet_id: 's',
    transaction_id: 't',
    payout: '1.0',
    currency: 'USD',
    status: 'approved',
  })
})
