import t from 'tap'
import { disableSheet } from '../../src/sheets.ts'
import { newSheet, receiverUrl, testApp, uniqueId } from '../helpers.ts'

const app = await testApp(t, { REJECTION_LOG_MAX_PER_SHEET: '5' })

async function rejections(sheetId: string) {
  await app.deliveryLog.flush()
  return app.prisma.deliveryRejection.findMany({ where: { sheetId }, orderBy: { id: 'asc' } })
}

t.test('a rejected delivery of a known sheet is logged with reason, parameter, raw query and address', async (t) => {
  const sheet = await newSheet(app)
  const url = `/meta/postback/conversion?sheet_id=${sheet}&transaction_id=a&payout=%7Bpayout%7D`
  const response = await app.inject({ method: 'GET', url, remoteAddress: '203.0.113.9' })
  t.equal(response.statusCode, 400)
  const [entry, ...rest] = await rejections(sheet)
  t.same(rest, [])
  t.match(entry, {
    reason: 'unreplaced_macro',
    parameter: 'payout',
    rawQuery: `sheet_id=${sheet}&transaction_id=a&payout=%7Bpayout%7D`,
    remoteAddress: '203.0.113.9',
  })
  t.ok(entry?.receivedAt instanceof Date)
})

t.test('deliveries naming an unknown sheet are not logged; a disabled sheet is', async (t) => {
  const unknown = uniqueId('nope')
  await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: unknown, transaction_id: 'a' }) })
  t.same(await rejections(unknown), [])

  const sheet = await newSheet(app)
  await disableSheet(app.prisma, sheet)
  await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: 'a' }) })
  t.match(await rejections(sheet), [{ reason: 'unknown_sheet', parameter: 'sheet_id' }])
})

t.test('a malformed sheet_id in the same batch does not cost the sheet its log entries', async (t) => {
  const sheet = await newSheet(app)
  await Promise.all([
    app.inject({ method: 'GET', url: `/meta/postback/conversion?sheet_id=${sheet}%00&transaction_id=a` }),
    app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: '' }) }),
  ])
  t.match(await rejections(sheet), [{ reason: 'missing_parameter', parameter: 'transaction_id' }])
  t.equal(app.deliveryLog.dropped, 0)
})

t.test('accepted deliveries are not logged', async (t) => {
  const sheet = await newSheet(app)
  await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: 'fine' }) })
  t.same(await rejections(sheet), [])
})

t.test('the log is bounded per sheet and keeps the newest entries', async (t) => {
  const [noisy, quiet] = [await newSheet(app), await newSheet(app)]
  await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: quiet, transaction_id: '' }) })
  for (let i = 0; i < 12; i++) {
    await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: noisy, transaction_id: 'a', payout: `bad${i}` }) })
    if (i % 4 === 3) await app.deliveryLog.flush()
  }
  const kept = await rejections(noisy)
  t.equal(kept.length, 5)
  t.same(kept.map((entry) => new URLSearchParams(entry.rawQuery).get('payout')), ['bad7', 'bad8', 'bad9', 'bad10', 'bad11'])
  t.equal((await rejections(quiet)).length, 1, "another sheet's entries are untouched")
})
