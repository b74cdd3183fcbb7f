// The receiver URL builder and the sheet's secret, and the public base URL it needs when the
// service listens on every address (HOST=0.0.0.0 in the container).
import t from 'tap'
import { newKeyHeader, newSheet, testApp } from '../helpers.ts'

t.test('the URL carries token= for a sheet with a secret', async (t) => {
  const app = await testApp(t, { PUBLIC_BASE_URL: 'https://postbacks.example.com' })
  const admin = await newKeyHeader(app, { global: true })
  const build = async (sheetId: string, extra = '') =>
    (await app.inject({ method: 'GET', url: `/api/v1/postback/sheets/${sheetId}/receiver-url?tracker=keitaro${extra}`, headers: admin })).json()
  const sheetId = await newSheet(app)
  t.notOk((await build(sheetId)).url.includes('token='), 'no secret: no token parameter')
  await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${sheetId}/token`, headers: admin })
  const placeholder = await build(sheetId)
  t.ok(placeholder.url.startsWith('https://postbacks.example.com/meta/postback/conversion?'))
  t.ok(placeholder.url.includes('&token=YOUR_SHEET_TOKEN'), placeholder.url)
  t.match(placeholder.note, /YOUR_SHEET_TOKEN/)
  const given = await build(sheetId, '&token=pst_a%2Bb')
  t.ok(given.url.includes('&token=pst_a%2Bb'), given.url)
})

t.test('with a wildcard HOST the builder needs PUBLIC_BASE_URL and says so', async (t) => {
  for (const host of ['0.0.0.0', '::']) {
    const app = await testApp(t, { HOST: host })
    const admin = await newKeyHeader(app, { global: true })
    const sheetId = await newSheet(app)
    const response = await app.inject({ method: 'GET', url: `/api/v1/postback/sheets/${sheetId}/receiver-url?tracker=generic`, headers: admin })
    t.equal(response.statusCode, 500, host)
    t.equal(response.json().error, 'not_configured')
    t.match(response.json().message, /PUBLIC_BASE_URL/)
  }
  const ipv6 = await testApp(t, { HOST: '::1', PORT: '3001' })
  const admin = await newKeyHeader(ipv6, { global: true })
  const sheetId = await newSheet(ipv6)
  const url = (await ipv6.inject({ method: 'GET', url: `/api/v1/postback/sheets/${sheetId}/receiver-url?tracker=generic`, headers: admin })).json().url
  t.ok(url.startsWith('http://[::1]:3001/meta/postback/conversion?'), url)
})
