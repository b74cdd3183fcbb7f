// OPS_PORT: /metrics and /docs on a listener of their own, and only there; the probes on both;
// nothing else on the operations listener. Without it, everything on the main listener.
import t from 'tap'
import { loadConfig } from '../../src/config.ts'
import { listen, newSheet, receiverUrl, testApp } from '../helpers.ts'

const OPS_PATHS = ['/metrics', '/docs', '/docs/json']

t.test('without OPS_PORT, /metrics and /docs answer on the main listener', async (t) => {
  const app = await testApp(t)
  const base = await listen(app)
  for (const path of OPS_PATHS) t.equal((await fetch(`${base}${path}`)).status, 200, path)
  t.equal(app.opsUrl(), undefined, 'no operations listener')
})

t.test('with OPS_PORT, /metrics and /docs answer only on the operations listener; the receiver and the API only on the main one', async (t) => {
  const app = await testApp(t, { OPS_PORT: '0', OPS_HOST: '127.0.0.1' })
  const base = await listen(app)
  const ops = app.opsUrl()!
  t.match(ops, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.not(new URL(ops).port, new URL(base).port)

  for (const path of OPS_PATHS) {
    t.equal((await fetch(`${ops}${path}`)).status, 200, `${path} on the operations listener`)
    const main = await fetch(`${base}${path}`)
    t.equal(main.status, 404, `${path} not on the main listener`)
    t.same(await main.json(), { error: 'not_found', message: `no route GET ${path}` })
  }
  t.match(await (await fetch(`${ops}/metrics`)).text(), /^# HELP /m, 'Prometheus text')
  for (const path of ['/livez', '/readyz']) {
    t.equal((await fetch(`${base}${path}`)).status, 200, `${path} on the main listener`)
    t.equal((await fetch(`${ops}${path}`)).status, 200, `${path} on the operations listener`)
  }

  const sheet = await newSheet(app)
  const stored = await fetch(`${base}${receiverUrl({ sheet_id: sheet, transaction_id: 'main-1' })}`)
  t.equal(stored.status, 200, 'the receiver on the main listener')
  const refused = await fetch(`${ops}${receiverUrl({ sheet_id: sheet, transaction_id: 'ops-1' })}`)
  t.equal(refused.status, 404, 'not on the operations listener')
  t.equal((await fetch(`${ops}/api/v1/postback/conversions`)).status, 404, 'nor the management API')
  t.match(await (await fetch(`${ops}/metrics`)).text(), /postback_deliveries_total\{outcome="stored"\} 1\n/, 'one app: the operations listener shows what the main one counted')

  await app.close()
  await t.rejects(fetch(`${ops}/livez`), 'the operations listener closes with the app')
})

t.test('OPS_PORT must differ from PORT', async (t) => {
  t.throws(() => loadConfig({ PORT: '3000', OPS_PORT: '3000' }), { name: 'ConfigError', message: /^OPS_PORT=3000 is not allowed: a port other than PORT \(3000\)/ })
  t.throws(() => loadConfig({ OPS_PORT: '70000' }), { name: 'ConfigError', message: /^OPS_PORT="70000" is not allowed: a whole number from 0 to 65535/ })
})
