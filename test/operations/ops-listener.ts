// OPS_PORT: /metrics and /docs on a listener of their own, and only there; the probes on both;
// nothing else on the operations listener. Without it, everything on the main listener.
import { request as httpRequest } from 'node:http'
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

  for (const path of OPS_PATHS) {
    t.equal((await fetch(`${ops}${path}`)).status, 200, `${path} on the operations listener`)
    const main = await fetch(`${base}${path}`)
    t.equal(main.status, 404, `${path} not on the main listener`)
    t.same(await main.json(), { error: 'not_found', message: `no route GET ${path}` })
  }
  // Other spellings of the same routes (the router decodes percent-escapes and takes absolute URLs).
  for (const path of ['/%6Detrics', '/metric%73', '/doc%73', '/doc%73/json', 'http://x/metrics', 'http://x/docs/json']) {
    t.equal(await statusOf(base, path), 404, `${path} not on the main listener`)
    t.equal(await statusOf(ops, path), 200, `${path} on the operations listener`)
  }
  const nowhere = await fetch(`${ops}/nowhere`)
  t.equal(nowhere.status, 404)
  t.same(await nowhere.json(), { error: 'not_found', message: 'no route GET /nowhere' }, 'an unknown path: the usual JSON 404')
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

/** The status of GET `path` sent as written (fetch would normalise it). */
function statusOf(base: string, path: string): Promise<number> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    httpRequest({ host: hostname, port, path, method: 'GET' }, (response) => {
      response.resume()
      resolve(response.statusCode!)
    }).on('error', reject).end()
  })
}
