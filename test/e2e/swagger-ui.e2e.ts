// Swagger UI in a real headless Chromium (Debian's chromium, driven by playwright-core): the page
// loads, lists the operations of both surfaces, and "try it out" on the receiver stores a conversion.
// Run by `npm run test:e2e` (.ci/run installs chromium); CHROMIUM_PATH overrides /usr/bin/chromium.
import { chromium } from 'playwright-core'
import t from 'tap'
import { listen, newSheet, testApp } from '../helpers.ts'

const app = await testApp(t)
const baseUrl = await listen(app)
const sheet = await newSheet(app)

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
})
t.teardown(() => browser.close())

t.test('the page lists the receiver and the management operations', async (t) => {
  const page = await browser.newPage()
  const errors: string[] = []
  page.on('pageerror', (error) => errors.push(error.message))
  const response = await page.goto(`${baseUrl}/docs`)
  t.equal(response?.status(), 200)
  await page.waitForSelector('.opblock', { timeout: 30_000 })
  const paths = await page.$$eval('.opblock-summary-path', (nodes) => nodes.map((node) => node.getAttribute('data-path')))
  for (const path of [
    '/meta/postback/conversion',
    '/api/v1/postback/conversions',
    '/api/v1/postback/conversions/{id}',
    '/api/v1/postback/summary',
    '/api/v1/postback/rejections',
    '/api/v1/postback/sheets/{sheet_id}/status',
    '/api/v1/postback/admin/keys',
  ]) {
    t.ok(paths.includes(path), `lists ${path}`)
  }
  t.ok(await page.isVisible('.btn.authorize'), 'offers to authorize with a bearer key')
  t.same(errors, [], 'no script errors')
  await page.close()
})

t.test('"try it out" on the receiver stores a conversion', async (t) => {
  const page = await browser.newPage()
  await page.goto(`${baseUrl}/docs`)
  const operation = page.locator('#operations-receiver-receivePostback')
  await operation.locator('.opblock-summary').click()
  await operation.locator('button.try-out__btn').click()
  await operation.locator('tr[data-param-name="sheet_id"] input').fill(sheet)
  await operation.locator('tr[data-param-name="transaction_id"] input').fill('from-swagger-ui')
  await operation.locator('tr[data-param-name="payout"] input').fill('9.99')
  await operation.locator('button.execute').click()
  const status = operation.locator('.live-responses-table .response .response-col_status').first()
  await status.waitFor({ timeout: 30_000 })
  t.equal((await status.textContent())?.trim(), '200')
  const body = await operation.locator('.live-responses-table .response-col_description .microlight').first().textContent()
  t.match(JSON.parse(body ?? '{}'), { status: 'stored' })
  const [row] = await app.prisma.$queryRaw<Array<{ payout: string }>>`
    SELECT payout::text FROM conversions WHERE sheet_id = ${sheet} AND transaction_id = 'from-swagger-ui'`
  t.equal(row?.payout, '9.99', 'the row is in the database')
  await page.close()
})
