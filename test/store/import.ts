// postback-admin import --sheet ID FILE.csv on either store: columns by name, the receiver's rules
// for every value (bad lines reported by number and skipped), lifecycle moves, repeats, a second run
// that changes nothing, and the JSON counts.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { openDatabase } from '../../src/database.ts'
import { adminOn, onPostgres, scratchDir, storeEnv, uniqueId } from '../helpers.ts'

const env = storeEnv(t)
const store = await openDatabase(loadConfig(env))
t.teardown(() => store.close())
const admin = adminOn(env, store)
const dir = scratchDir(t, 'postback-import-')

async function newSheet(currency = 'USD'): Promise<string> {
  const id = uniqueId('import')
  t.equal((await admin('sheet', 'create', '--id', id, '--currency', currency)).code, 0)
  return id
}

function csv(name: string, text: string): string {
  const file = join(dir, name)
  writeFileSync(file, text)
  return file
}

interface StoredRow {
  transaction_id: string
  event: string
  status: string
  network_status: string | null
  payout: string | null
  currency: string
  campaign_id: string | null
  received_at: string
  updated_at: string | null
}

async function stored(sheet: string): Promise<StoredRow[]> {
  return store.withSession((session) =>
    session.query<StoredRow>(
      `SELECT transaction_id, event, status, network_status, payout::text AS payout, currency::text AS currency, campaign_id,
         to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS received_at,
         to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS updated_at
       FROM conversions WHERE sheet_id = $1 ORDER BY transaction_id, event`,
      [sheet],
    ),
  )
}

t.test('columns by name, in any order, others ignored; values as the receiver takes them', async (t) => {
  const sheet = await newSheet('EUR')
  const file = csv('basic.csv', [
    'Campaign_ID,transaction_id,payout,currency,click_url,received_at,status,event',
    'c1,t1,12.50,usd,https://x.example/?a=1,2026-11-01T10:00:00Z,,',
    'c1,t2,3,,,2026-11-02 08:30:00,lead,',
    '"c,2","t3",0.5,GBP,,2026-11-03,sale,deposit',
    ',t4,,,,,,',
  ].join('\r\n') + '\r\n')
  const result = await admin('import', '--sheet', sheet, file)
  t.equal(result.code, 0, result.stderr)
  t.same(result.result, { sheet_id: sheet, lines: 4, imported: 4, updated: 0, duplicate: 0, rejected: 0, ignored_columns: ['click_url'] })
  const rows = await stored(sheet)
  t.match(rows, [
    { transaction_id: 't1', event: '', status: 'approved', network_status: null, payout: '12.50', currency: 'USD', campaign_id: 'c1', received_at: '2026-11-01T10:00:00Z', updated_at: null },
    { transaction_id: 't2', status: 'pending', network_status: 'lead', payout: '3', currency: 'EUR', received_at: '2026-11-02T08:30:00Z' },
    { transaction_id: 't3', event: 'deposit', status: 'approved', network_status: 'sale', payout: '0.5', currency: 'GBP', campaign_id: 'c,2', received_at: '2026-11-03T00:00:00Z' },
    { transaction_id: 't4', payout: null, currency: 'EUR', campaign_id: null },
  ])
  t.equal(rows.length, 4)
})

t.test('a bad line is reported with its number and reason and skipped; the rest is imported', async (t) => {
  const sheet = await newSheet()
  const file = csv('bad.csv', [
    'transaction_id,payout,currency,status,received_at',
    'ok1,1.00,,,', // line 2
    '{clickid},1.00,,,', // 3: an unreplaced macro
    'bad-payout,1.2.3,,,', // 4
    'bad-currency,1,XYZ,,', // 5
    'bad-status,1,,maybe,', // 6
    ',1,,,', // 7: no transaction_id
    'bad-time,1,,,yesterday', // 8
    'short,1', // 9: too few fields
    'ok2,2.00,,,', // 10
    '', // 11: empty, skipped
    '"two', // 12 and 13: one record, a quoted line break in its transaction_id
    'lines",1.2.3,,,',
    'bad-last,x,,,', // 14
  ].join('\n'))
  const result = await admin('import', '--sheet', sheet, file)
  t.equal(result.code, 0, result.stderr)
  t.match(result.result, { lines: 11, imported: 2, rejected: 9, duplicate: 0, updated: 0 })
  const reported = result.stderr.trim().split('\n')
  t.equal(reported.length, 9)
  t.match(reported[7], /^line 13: invalid_parameter \(transaction_id\): /, 'a record over two lines is reported at its last')
  t.match(reported[8], /^line 14: invalid_parameter \(payout\): /, 'the lines after it keep their numbers')
  t.match(reported[0], /^line 3: unreplaced_macro \(transaction_id\): /)
  t.match(reported[1], /^line 4: invalid_parameter \(payout\): /)
  t.match(reported[2], /^line 5: unknown_currency \(currency\): /)
  t.match(reported[3], /^line 6: invalid_parameter \(status\): .*approved_status/)
  t.match(reported[4], /^line 7: missing_parameter \(transaction_id\): transaction_id is required/)
  t.match(reported[5], /^line 8: invalid_parameter \(received_at\): /)
  t.match(reported[6], /^line 9: invalid_line \(line\): the line has 2 fields, the header 5/)
  t.same((await stored(sheet)).map((row) => row.transaction_id), ['ok1', 'ok2'])
})

t.test('lifecycle: moves apply in file order, repeats are duplicates, and a second run changes nothing', async (t) => {
  const sheet = await newSheet()
  const lines = [
    'transaction_id,status,payout,received_at,event',
    'a,lead,5,2026-11-01T00:00:00Z,',
    'b,sale,7,2026-11-01T00:00:00Z,',
    'a,sale,,2026-11-02T00:00:00Z,', // a move, the payout kept
    'a,sale,99,2026-11-03T00:00:00Z,', // a repeat: nothing changes
    'b,chargeback,,2026-11-04T00:00:00Z,', // approved to rejected
    'b,sale,,2026-11-05T00:00:00Z,', // rejected is final
    'a,sale,1,2026-11-01T00:00:00Z,deposit', // another event: its own key
  ]
  const file = csv('lifecycle.csv', lines.join('\n'))
  const first = await admin('import', '--sheet', sheet, file)
  t.equal(first.code, 0, first.stderr)
  t.match(first.result, { lines: 7, imported: 3, updated: 2, duplicate: 2, rejected: 0 })
  const after = await stored(sheet)
  t.match(after, [
    { transaction_id: 'a', event: '', status: 'approved', network_status: 'sale', payout: '5', updated_at: '2026-11-02T00:00:00Z' },
    { transaction_id: 'a', event: 'deposit', status: 'approved', payout: '1' },
    { transaction_id: 'b', status: 'rejected', network_status: 'chargeback', payout: '7', updated_at: '2026-11-04T00:00:00Z' },
  ])
  const history = await store.withSession((session) =>
    session.query<{ transaction_id: string; status: string }>(
      // Per conversion, in the order applied (on PostgreSQL two writers share the keys, so the
      // moves of different conversions may interleave).
      `SELECT c.transaction_id, h.status FROM conversion_history h JOIN conversions c ON c.id = h.conversion_id WHERE c.sheet_id = $1 ORDER BY c.transaction_id, c.event, h.id`,
      [sheet],
    ),
  )
  t.same(history.map((row) => `${row.transaction_id} ${row.status}`), ['a pending', 'a approved', 'b approved', 'b rejected'], 'each applied move in the history')

  const second = await admin('import', '--sheet', sheet, file)
  t.equal(second.code, 0, second.stderr)
  t.match(second.result, { lines: 7, imported: 0, updated: 0, duplicate: 7, rejected: 0 }, 'the second run changes nothing')
  t.same(await stored(sheet), after)
})

t.test('chunks: many lines and a small chunk give the same answer', async (t) => {
  const sheet = await newSheet()
  const body = Array.from({ length: 1200 }, (_, i) => `n${i % 1000},${i < 1000 ? 'pending' : 'approved'},${i}`)
  const file = csv('many.csv', ['transaction_id,status,payout', ...body].join('\n'))
  const result = await admin('import', '--sheet', sheet, file)
  t.equal(result.code, 0, result.stderr)
  t.match(result.result, { lines: 1200, imported: 1000, updated: 200, duplicate: 0 })
  const rows = await stored(sheet)
  t.equal(rows.filter((row) => row.status === 'approved').length, 200)
})

t.test('files and arguments it cannot take', async (t) => {
  const sheet = await newSheet()
  const refused: Array<[args: string[], message: string]> = [
    [['--sheet', sheet, csv('no-id.csv', 'payout,currency\n1,USD\n')], 'the header has no transaction_id column (it has: payout, currency)'],
    [['--sheet', sheet, csv('empty.csv', '')], 'the file is empty'],
    [['--sheet', sheet, csv('twice.csv', 'transaction_id,payout,payout\nx,1,2\n')], 'the header names payout twice'],
    [['--sheet', sheet, csv('unclosed.csv', 'transaction_id,payout\nfine,1\n"open,2\n')], 'the file is not valid CSV'],
    [['--sheet', 'no-such-sheet', csv('one.csv', 'transaction_id\nx\n')], 'sheet no-such-sheet does not exist'],
    [['--sheet', sheet, join(dir, 'absent.csv')], `cannot read ${join(dir, 'absent.csv')}: ENOENT`],
  ]
  for (const [args, message] of refused) {
    const result = await admin('import', ...args)
    t.equal(result.code, 1, message)
    t.match(result.stderr, message)
  }
  t.equal((await admin('import', csv('x.csv', 'transaction_id\nx\n'))).code, 2, 'no --sheet: usage')
  t.same(await stored(sheet), [], 'nothing imported from any of them')
})

t.test('across chunks (written while the next is read), lines of one key still apply in file order', async (t) => {
  const { importCsv } = await import('../../src/import.ts')
  const { Readable } = await import('node:stream')
  const sheet = await newSheet()
  // 40 keys; each gets lead, then sale, then chargeback, 40 lines apart: with chunks of 7 lines a
  // key's three lines land in different chunks.
  const lines = ['transaction_id,status']
  for (const status of ['lead', 'sale', 'chargeback']) {
    for (let i = 0; i < 40; i++) lines.push(`k${i},${status}`)
  }
  const rejected: number[] = []
  const progress: number[] = []
  const result = await importCsv(store, {
    sheetId: sheet,
    input: Readable.from([lines.join('\n')]),
    onRejected: (line) => rejected.push(line),
    onProgress: (counts) => progress.push(counts.imported + counts.updated + counts.duplicate),
    chunkSize: 7,
  })
  t.match(result, { lines: 120, imported: 40, updated: 80, duplicate: 0, rejected: 0 })
  t.same(rejected, [])
  t.equal(progress.length, Math.ceil(120 / 7), 'a progress report per chunk')
  t.same(progress, [...progress].sort((a, b) => a - b), 'in order')
  t.same(new Set((await stored(sheet)).map((row) => row.status)), new Set(['rejected']), 'every key ended rejected: its moves applied in order')
})

t.test('the import folds what it imported into the summary rollups before it ends, unless --no-fold', async (t) => {
  const folded = async (sheet: string) =>
    Number(
      (
        await store.withSession((session) =>
          session.query<{ n: string | null }>(`SELECT sum(approved + pending + rejected)::text AS n FROM conversion_rollups WHERE sheet_id = $1 AND level = 1440 AND phase = 0`, [sheet]),
        )
      )[0]?.n ?? 0,
    )
  const [sheet, later] = [await newSheet(), await newSheet()]
  const lines = 'transaction_id,status,received_at\nf1,sale,2026-10-01T10:00:00Z\nf2,lead,2026-10-02T10:00:00Z\nf3,,2026-10-03T10:00:00Z\n'
  t.equal((await admin('import', '--sheet', sheet, csv('fold.csv', lines))).code, 0)
  t.equal((await admin('import', '--sheet', later, '--no-fold', csv('no-fold.csv', lines))).code, 0)
  // On PostgreSQL a transaction open anywhere on the server (another test's) holds folding back,
  // and other tests' servers fold everything: the counts are certain on the embedded store only.
  if (!onPostgres) {
    t.equal(await folded(sheet), 3, 'folded by the import')
    t.equal(await folded(later), 0, 'left to the service')
  }
  t.equal((await stored(later)).length, 3, 'imported either way')
})

t.test('conversions moving through three lines in different chunks end as their last line says (on PostgreSQL, over two writers)', async (t) => {
  const sheet = await newSheet()
  const { importCsv } = await import('../../src/import.ts')
  const { Readable } = await import('node:stream')
  // Each conversion's three lines 200 lines apart, so in different chunks of 50.
  const keys = Array.from({ length: 200 }, (_, i) => `k${i}`)
  const text = ['transaction_id,status,payout', ...['lead', 'sale', 'chargeback'].flatMap((status, step) => keys.map((key) => `${key},${status},${step + 1}`))].join('\n')
  const result = await importCsv(store, { sheetId: sheet, input: Readable.from([text]), chunkSize: 50, onRejected: () => t.fail('rejected') })
  t.match(result, { lines: 600, imported: 200, updated: 400, duplicate: 0 })
  const histories = await store.withSession((session) =>
    session.query<{ transaction_id: string; moves: string; status: string; payout: string }>(
      `SELECT c.transaction_id, string_agg(h.status, ' ' ORDER BY h.id) AS moves, c.status, c.payout::text AS payout
       FROM conversions c JOIN conversion_history h ON h.conversion_id = c.id WHERE c.sheet_id = $1 GROUP BY c.id ORDER BY c.transaction_id`,
      [sheet],
    ),
  )
  t.equal(histories.length, 200)
  t.same(
    histories.filter((row) => row.moves !== 'pending approved rejected' || row.status !== 'rejected' || row.payout !== '3').map((row) => row.transaction_id),
    [],
    'every conversion went pending, approved, rejected, and kept the last payout',
  )
})
