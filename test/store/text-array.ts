// textArray (src/conversion-batch.ts): the batch statement's text[] parameters written as PostgreSQL
// array literals by JSON.stringify, read back by the store exactly as the values were, on either store.
import t from 'tap'
import { textArray } from '../../src/conversion-batch.ts'
import { testApp } from '../helpers.ts'

const app = await testApp(t)

const roundTrip = async (values: Array<string | null>) => {
  const [row] = await app.db.query<{ values: Array<string | null> }>({ text: 'SELECT $1::text[] AS values', values: [textArray(values)] })
  return row!.values
}

t.test('values any delivery may carry come back as they were, written as a literal', async (t) => {
  const cases: Array<Array<string | null>> = [
    [],
    ['tx-1'],
    ['', ' ', 'a b', 'NULL', 'null', null, '{x}', 'a,b', "it's", 'ü€😀', '12.50', '[1]', '%', '#a#'],
    [null, null],
  ]
  for (const values of cases) {
    t.type(textArray(values), 'string', `a literal: ${JSON.stringify(values)}`)
    t.same(await roundTrip(values), values, JSON.stringify(values))
  }
})

t.test("values JSON would escape ('\"', '\\\\', control characters, a lone surrogate) go as the array, for the driver", async (t) => {
  for (const values of [['a"b'], ['a\\b', 'c'], ['tab\there'], ['line\nbreak', null], ['\ud800']]) {
    t.same(textArray(values), values, `the array itself: ${JSON.stringify(values)}`)
    if (values[0] !== '\ud800') t.same(await roundTrip(values), values, JSON.stringify(values))
  }
})
