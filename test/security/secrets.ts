// No secret in any output: configuration and start-up errors name the variable without its password;
// request logs and the rejection log never hold a sheet's secret (nor other secret-looking values).
import { Writable } from 'node:stream'
import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { newKeyHeader, newSheet, receiverUrl, testConfig } from '../helpers.ts'
import { run } from '../processes.ts'

const SECRET = 'S3cretPassw0rd'

t.test('configuration errors name the variable and never print a URL password', async (t) => {
  const cases: Array<Record<string, string>> = [
    { DATABASE_URL: `mysql://app:${SECRET}@db:3306/postbacks` },
    { DATABASE_URL: `mysql://app:${SECRET}/with@slash@db/postbacks` },
    { DATABASE_URL: `app:${SECRET}@db/postbacks` },
    { DATABASE_URL: `mysql://db/postbacks?sslmode=require&password=${SECRET}` },
    { REDIS_URL: `http://:${SECRET}@cache:6379` },
    { REDIS_URL: `cache:6379?password=${SECRET}` },
  ]
  for (const env of cases) {
    const [name] = Object.keys(env) as [string]
    const error = t.throws(() => loadConfig(env)) as Error
    t.ok(error instanceof ConfigError)
    t.ok(error.message.startsWith(`${name}=`), `names ${name}: ${error.message}`)
    t.notOk(error.message.includes(SECRET), `no password: ${error.message}`)
  }
})

t.test('the server stops on a bad or unreachable DATABASE_URL without printing its password', async (t) => {
  const bad = await run(['--import=tsx', 'src/server.ts'], { DATABASE_URL: `mysql://app:${SECRET}@db/postbacks`, LOG_LEVEL: 'info' })
  t.equal(bad.code, 2)
  t.match(bad.stderr, /DATABASE_URL=/)
  const unreachable = await run(['--import=tsx', 'src/server.ts'], {
    DATABASE_URL: `postgresql://app:${SECRET}@127.0.0.1:1/postbacks`,
    DB_CONNECT_TIMEOUT_MS: '500',
    LOG_LEVEL: 'trace',
    PORT: '0',
  })
  t.not(unreachable.code, 0, unreachable.stderr)
  for (const output of [bad.stdout, bad.stderr, unreachable.stdout, unreachable.stderr]) t.notOk(output.includes(SECRET), output)
})

t.test("neither the request log nor the rejection log holds a sheet's secret", async (t) => {
  const lines: string[] = []
  const app = await buildApp(testConfig(t, { TRUST_PROXY: '127.0.0.1' }), {
    logger: {
      level: 'trace',
      stream: new Writable({
        write(chunk, _encoding, done) {
          lines.push(String(chunk))
          done()
        },
      }),
    },
  })
  t.teardown(() => app.close())
  await app.ready()
  const admin = await newKeyHeader(app, { global: true })
  const sheetId = await newSheet(app)
  const token = (await app.inject({ method: 'POST', url: `/api/v1/postback/admin/sheets/${sheetId}/token`, headers: admin })).json().token as string
  const wrong = `pst_wrong${SECRET}`
  const otherSecret = `api${SECRET}`
  const deliveries: Array<Record<string, string>> = [
    { sheet_id: sheetId, transaction_id: 'ok-1', token },
    { sheet_id: sheetId, transaction_id: 'ok-2', token, test: '1' },
    { sheet_id: sheetId, transaction_id: 'bad-1', token: wrong },
    { sheet_id: sheetId, transaction_id: '{clickid}', token },
    { sheet_id: sheetId, transaction_id: 'bad-2', token, test: '1', payout: 'abc', api_key: otherSecret },
    { sheet_id: sheetId, transaction_id: 'bad-3', token: wrong, test: '1' },
  ]
  for (const params of deliveries) await app.inject({ method: 'GET', url: receiverUrl(params) })
  const built = await app.inject({ method: 'GET', url: `/api/v1/postback/sheets/${sheetId}/receiver-url?tracker=keitaro&token=${encodeURIComponent(token)}`, headers: admin })
  t.ok(built.json().url.includes(`token=${encodeURIComponent(token)}`), 'the builder puts the given secret in the URL')
  await app.deliveryLog.flush()

  const rejections = (await app.inject({ method: 'GET', url: `/api/v1/postback/rejections?sheet_id=${sheetId}`, headers: admin })).json().data as Array<{ raw_query: string }>
  t.equal(rejections.length, 4)
  const log = lines.join('')
  t.ok(log.includes('postback rejected') && log.includes(sheetId), 'the log was captured')
  for (const secret of [token, token.slice(4), wrong, otherSecret]) {
    t.notOk(log.includes(secret), 'not in the request log')
    t.notOk(log.includes(encodeURIComponent(secret)), 'not in the request log, encoded')
    for (const entry of rejections) t.notOk(entry.raw_query.includes(secret), `not in the rejection log: ${entry.raw_query}`)
  }
  t.ok(rejections.every((entry) => entry.raw_query.includes('token=[REDACTED]')))
  t.ok(rejections.some((entry) => entry.raw_query.includes('api_key=[REDACTED]')))
})
