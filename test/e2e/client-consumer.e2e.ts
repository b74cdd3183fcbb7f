// A TypeScript program outside the project imports postback-store/client, type-checks (strict), and
// lists conversions and reads a summary from a running service. Run by `npm run test:e2e`.
import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { deliverAll, listen, newKeyHeader, newSheet, testApp } from '../helpers.ts'
import { ROOT } from '../processes.ts'

const run = promisify(execFile)

const CONSUMER = `
import { createClient, type Conversion, type SummaryRow } from 'postback-store/client'

const client = createClient({ baseUrl: process.env.POSTBACK_URL!, apiKey: process.env.POSTBACK_API_KEY })
const sheet = process.env.SHEET_ID!

const { data: page, error } = await client.GET('/api/v1/postback/conversions', { params: { query: { sheet_id: sheet, limit: 10 } } })
if (!page) throw new Error(error?.message)
const conversions: Conversion[] = page.data
const { data: summary } = await client.GET('/api/v1/postback/summary', { params: { query: { sheet_id: sheet, group_by: 'campaign' } } })
const rows: SummaryRow[] = summary?.data ?? []
const revenue: string = rows[0]?.revenue ?? ''
console.log(JSON.stringify({ transactions: conversions.map((c) => c.transaction_id), revenue, next: page.next_cursor }))
`

// A deliberate type error: the summary has no 'day' grouping.
const WRONG = CONSUMER.replace("group_by: 'campaign'", "group_by: 'day'")

t.test('an outside program type-checks against postback-store/client and reads a running service', async (t) => {
  const app = await testApp(t)
  const baseUrl = await listen(app)
  const sheet = await newSheet(app)
  await deliverAll(app, [
    { sheet_id: sheet, transaction_id: 'c1', payout: '1.50', campaign_id: 'cmp' },
    { sheet_id: sheet, transaction_id: 'c2', payout: '2.25', campaign_id: 'cmp' },
  ])
  const { authorization } = await newKeyHeader(app, { sheetIds: [sheet] })

  const dir = mkdtempSync(join(tmpdir(), 'postback-consumer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(join(dir, 'node_modules'))
  // As `npm install ../postback-store` would link it.
  symlinkSync(ROOT, join(dir, 'node_modules', 'postback-store'))
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'internal-reporting', type: 'module', private: true }))
  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { target: 'ES2023', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, skipLibCheck: true, allowImportingTsExtensions: true, types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')] }, include: ['*.ts'] }),
  )
  writeFileSync(join(dir, 'report.ts'), CONSUMER)
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc')
  await run(process.execPath, [tsc, '-p', dir]).catch((error: { stdout: string }) => t.fail(`type-check failed: ${error.stdout}`))
  t.pass('the consumer type-checks')

  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(dir, 'report.ts')], {
    cwd: ROOT,
    env: { ...process.env, POSTBACK_URL: baseUrl, POSTBACK_API_KEY: authorization.slice('Bearer '.length), SHEET_ID: sheet },
  })
  t.same(JSON.parse(stdout), { transactions: ['c2', 'c1'], revenue: '3.75', next: null })

  writeFileSync(join(dir, 'report.ts'), WRONG)
  const wrong = await run(process.execPath, [tsc, '-p', dir]).then(
    () => '',
    (error: { stdout: string }) => error.stdout,
  )
  t.match(wrong, /"day"/, 'a call the API does not have fails to type-check')
})
