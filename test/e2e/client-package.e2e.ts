// The client package as an outside project gets it: `npm pack` in client/ builds the tarball, an empty
// project installs it (and openapi-fetch from the registry, nothing else of this repository), and two
// programs use it against a running service: plain Node ESM, and TypeScript checked by `tsc --strict`
// with module nodenext, then run as the JavaScript tsc wrote. The Node program also runs on every
// binary named in CLIENT_NODE_BINARIES (colon-separated; CI passes the Dockerfile's Node.js).
import { execFile } from 'node:child_process'
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { deliverAll, listen, newKeyHeader, newSheet, testApp } from '../helpers.ts'
import { ROOT } from '../processes.ts'

const run = promisify(execFile)

// Reads the list and a summary, then follows the feed until it has seen `EXPECT` changes.
const NODE_PROGRAM = `
import { createClient, followChanges } from '@postback-store/client'

const client = createClient({ baseUrl: process.env.POSTBACK_URL, apiKey: process.env.POSTBACK_API_KEY })
const sheet_id = process.env.SHEET_ID
const { data: page } = await client.GET('/api/v1/postback/conversions', { params: { query: { sheet_id, limit: 10 } } })
const changes = []
const stop = new AbortController()
for await (const change of followChanges(client, { sheet_id, signal: stop.signal, limit: 2, wait: 5 })) {
  changes.push(change.kind + ' ' + change.conversion.transaction_id + ' ' + change.conversion.status)
  if (changes.length === Number(process.env.EXPECT)) stop.abort()
}
console.log(JSON.stringify({ listed: page.data.map((c) => c.transaction_id), changes }))
`

const TS_PROGRAM = `
import { createClient, followChanges, type Change, type Conversion, type SummaryRow } from '@postback-store/client'

const client = createClient({ baseUrl: process.env.POSTBACK_URL!, apiKey: process.env.POSTBACK_API_KEY })
const sheet_id = process.env.SHEET_ID!
const { data: page, error } = await client.GET('/api/v1/postback/conversions', { params: { query: { sheet_id, limit: 10 } } })
if (!page) throw new Error(error?.message)
const conversions: Conversion[] = page.data
const { data: summary } = await client.GET('/api/v1/postback/summary', { params: { query: { sheet_id, group_by: 'campaign' } } })
const rows: SummaryRow[] = summary?.data ?? []
const seen: Change[] = []
const stop = new AbortController()
for await (const change of followChanges(client, { sheet_id, signal: stop.signal, wait: 5 })) {
  seen.push(change)
  if (seen.length === Number(process.env.EXPECT)) stop.abort()
}
const kinds: Array<'stored' | 'updated'> = seen.map((change) => change.kind)
console.log(JSON.stringify({ listed: conversions.map((c) => c.transaction_id), revenue: rows[0]?.revenue, kinds }))
`

// A deliberate type error: the summary has no 'day' grouping.
const WRONG = TS_PROGRAM.replace("group_by: 'campaign'", "group_by: 'day'")

t.test('the packed client installs into an empty project and runs from plain Node and from strict TypeScript', async (t) => {
  const app = await testApp(t)
  const baseUrl = await listen(app)
  const sheet = await newSheet(app)
  await deliverAll(app, [
    { sheet_id: sheet, transaction_id: 'c1', payout: '1.50', campaign_id: 'cmp', status: 'pending' },
    { sheet_id: sheet, transaction_id: 'c2', payout: '2.25', campaign_id: 'cmp' },
    { sheet_id: sheet, transaction_id: 'c1', status: 'approved' },
  ])
  const { authorization } = await newKeyHeader(app, { sheetIds: [sheet] })

  const dir = mkdtempSync(join(tmpdir(), 'postback-consumer-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: join(ROOT, 'client') })
  const tarball = readdirSync(dir).find((name) => name.endsWith('.tgz'))
  t.ok(tarball, 'npm pack wrote a tarball')
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'internal-reporting', type: 'module', private: true }))
  await run('npm', ['install', '--no-audit', '--no-fund', '--silent', `./${tarball}`], { cwd: dir })
  const installed = readdirSync(join(dir, 'node_modules')).sort()
  t.same(installed.filter((name) => !name.startsWith('.')), ['@postback-store', 'openapi-fetch', 'openapi-typescript-helpers'], 'the client and openapi-fetch, nothing else')

  const env = { ...process.env, POSTBACK_URL: baseUrl, POSTBACK_API_KEY: authorization.slice('Bearer '.length), SHEET_ID: sheet, EXPECT: '3' }
  writeFileSync(join(dir, 'follow.mjs'), NODE_PROGRAM)
  const nodes = [process.execPath, ...(process.env.CLIENT_NODE_BINARIES ?? '').split(':').filter(Boolean)]
  for (const node of nodes) {
    const { stdout } = await run(node, ['follow.mjs'], { cwd: dir, env })
    t.same(JSON.parse(stdout), { listed: ['c2', 'c1'], changes: ['stored c1 pending', 'stored c2 approved', 'updated c1 approved'] }, `plain Node: ${node}`)
  }

  writeFileSync(
    join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, outDir: 'dist', types: ['node'], typeRoots: [join(ROOT, 'node_modules/@types')] },
      include: ['*.ts'],
    }),
  )
  writeFileSync(join(dir, 'report.ts'), TS_PROGRAM)
  const tsc = join(ROOT, 'node_modules/typescript/bin/tsc')
  await run(process.execPath, [tsc, '-p', dir]).catch((error: { stdout: string }) => t.fail(`type-check failed: ${error.stdout}`))
  const { stdout } = await run(process.execPath, [join(dir, 'dist/report.js')], { cwd: dir, env })
  t.same(JSON.parse(stdout), { listed: ['c2', 'c1'], revenue: '3.75', kinds: ['stored', 'stored', 'updated'] }, 'strict TypeScript, compiled by tsc')

  writeFileSync(join(dir, 'report.ts'), WRONG)
  const wrong = await run(process.execPath, [tsc, '-p', dir]).then(
    () => '',
    (error: { stdout: string }) => error.stdout,
  )
  t.match(wrong, /"day"/, 'a call the API does not have fails to type-check')
})
