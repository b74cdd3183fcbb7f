import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.ts'

t.test('defaults: embedded store on 127.0.0.1:3000 in ./data', async (t) => {
  const config = loadConfig({})
  t.same([config.HOST, config.PORT, config.DATA_DIR, config.DATABASE_URL], ['127.0.0.1', 3000, './data', undefined])
  t.equal(config.MIGRATE_ON_START, true)
})

t.test('values are read and converted', async (t) => {
  const config = loadConfig({ HOST: '0.0.0.0', PORT: '8080', DATABASE_URL: 'postgresql://u@h/db', MIGRATE_ON_START: 'false', LOG_LEVEL: 'warn' })
  t.same([config.HOST, config.PORT, config.DATABASE_URL, config.MIGRATE_ON_START, config.LOG_LEVEL], ['0.0.0.0', 8080, 'postgresql://u@h/db', false, 'warn'])
})

t.test('an empty variable counts as unset', async (t) => {
  t.equal(loadConfig({ PORT: '', DATABASE_URL: '' }).PORT, 3000)
  t.equal(loadConfig({ DATABASE_URL: '' }).DATABASE_URL, undefined)
})

t.test('a bad value names the variable and what is allowed', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'abc' }, /^PORT="abc" is not allowed: a whole number from 0 to 65535/],
    [{ PORT: '70000' }, /^PORT="70000" is not allowed: a whole number from 0 to 65535/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL="loud" is not allowed: one of fatal, error, warn, info/],
    [{ DATABASE_URL: 'mysql://x' }, /^DATABASE_URL="mysql:\/\/x" is not allowed: PostgreSQL connection URL.*matching \^postgres/],
    [{ MIGRATE_ON_START: 'maybe' }, /^MIGRATE_ON_START="maybe" is not allowed: true or false/],
    [{ RECEIVER_QUEUE_MAX: '0' }, /^RECEIVER_QUEUE_MAX="0" is not allowed: a whole number from 1 to/],
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadConfig(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
  t.ok(new ConfigError('x') instanceof Error)
})

t.test('receiver batch settings: the longest wait defaults to 0 and is bounded', async (t) => {
  t.equal(loadConfig({}).RECEIVER_BATCH_WAIT_MS, 0)
  t.equal(loadConfig({ RECEIVER_BATCH_WAIT_MS: '5' }).RECEIVER_BATCH_WAIT_MS, 5)
  t.throws(() => loadConfig({ RECEIVER_BATCH_WAIT_MS: '1001' }), { message: /^RECEIVER_BATCH_WAIT_MS="1001" is not allowed: a whole number from 0 to 1000/ })
})
