// A PostgreSQL outage (the connection cut by a proxy, mid-load): 503 with Retry-After within a
// bounded time, readiness reports not ready, the process goes on, and it recovers by itself.
// PostgreSQL only (PGlite is in process): this file runs in the suite's PostgreSQL pass.
import t, { type Test } from 'tap'
import { newKeyHeader, newSheet, onPostgres, receiverUrl, testApp, testConfig } from '../helpers.ts'
import { openDatabase, type Database } from '../../src/database.ts'
import { TcpProxy } from '../fixtures/tcp-proxy.ts'
import { StoreUnavailableError } from '../../src/storage-errors.ts'
import { setImmediate as nextTurn, setTimeout as delay } from 'node:timers/promises'

if (!onPostgres) {
  // The embedded store has no connection to lose; its failure is the store closing under the app.
  t.test('embedded store failing: 503 with Retry-After, readiness not ready, the process goes on', async (t) => {
    const app = await testApp(t, { RETRY_AFTER_SECONDS: '3' })
    const sheet = await newSheet(app)
    const key = await newKeyHeader(app, { global: true })
    await app.db.close()
    const response = await app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: 'x' }) })
    t.same([response.statusCode, response.headers['retry-after'], response.json().error], [503, '3', 'storage_unavailable'])
    // The management API too, from its API-key lookup on.
    const listed = await app.inject({ method: 'GET', url: `/api/v1/postback/conversions?sheet_id=${sheet}`, headers: key })
    t.same([listed.statusCode, listed.headers['retry-after'], listed.json().error], [503, '3', 'storage_unavailable'])
    t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 503)
    t.equal((await app.inject({ method: 'GET', url: '/livez' })).statusCode, 200)
  })
} else {
  // A proxy in front of the suite's database, and the database's URL through it.
  const startProxy = async () => {
    const target = new URL(process.env.DATABASE_URL!)
    const started = new TcpProxy(target.hostname, Number(target.port || 5432))
    await started.start()
    target.port = String(started.port)
    return { proxy: started, url: target.toString() }
  }
  const { proxy, url } = await startProxy()
  t.teardown(() => proxy.cut())
  const app = await testApp(t, { DATABASE_URL: url, DB_CONNECT_TIMEOUT_MS: '1000', DB_STATEMENT_TIMEOUT_MS: '2000', RETRY_AFTER_SECONDS: '3' })
  const sheet = await newSheet(app)
  let sequence = 0
  const deliver = () => app.inject({ method: 'GET', url: receiverUrl({ sheet_id: sheet, transaction_id: `o${sequence++}` }) })

  t.test('stores while the database is up, 503s while it is down, recovers without a restart', async (t) => {
    const acknowledged: string[] = []
    const record = (response: Awaited<ReturnType<typeof deliver>>, id: string) => {
      if (response.statusCode === 200) acknowledged.push(id)
      return response
    }
    const load = async (n: number) => Promise.all(Array.from({ length: n }, async () => {
      const id = `o${sequence}`
      return record(await deliver(), id)
    }))

    t.same(new Set((await load(20)).map((r) => r.statusCode)), new Set([200]), 'up: stored')
    const inFlight = load(30)
    await proxy.cut()
    const during = await inFlight
    t.ok(during.every((r) => r.statusCode === 200 || r.statusCode === 503), 'cut mid-load: every answer is 200 or 503')

    const began = Date.now()
    const down = await load(10)
    const elapsed = Date.now() - began
    t.same(new Set(down.map((r) => r.statusCode)), new Set([503]), 'down: 503')
    t.ok(down.every((r) => r.headers['retry-after'] === '3' && r.json().error === 'storage_unavailable'), 'with Retry-After and the error body')
    t.ok(elapsed < 5000, `answered in ${elapsed} ms (connection timeout 1000 ms)`)
    const ready = await app.inject({ method: 'GET', url: '/readyz' })
    t.equal(ready.statusCode, 503, 'readiness: not ready')
    t.equal((await app.inject({ method: 'GET', url: '/livez' })).statusCode, 200, 'liveness: the process is fine')

    await proxy.restore()
    let recovered = false
    for (let attempt = 0; attempt < 20 && !recovered; attempt++) {
      recovered = (await load(1))[0]!.statusCode === 200
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 250))
    }
    t.ok(recovered, 'stores again once the database is back')
    t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200, 'readiness: ready again')

    const stored = await app.prisma.$queryRaw<Array<{ transaction_id: string }>>`SELECT transaction_id FROM conversions WHERE sheet_id = ${sheet}`
    const ids = new Set(stored.map((row) => row.transaction_id))
    t.same(acknowledged.filter((id) => !ids.has(id)), [], `every one of ${acknowledged.length} acknowledged deliveries is stored`)
  })

  t.test('a database that hangs (connections taken, never answered): 503 within the timeouts, then recovery', async (t) => {
    t.equal((await deliver()).statusCode, 200)
    proxy.pause()
    const began = Date.now()
    const hung = await Promise.all([deliver(), deliver(), deliver()])
    const elapsed = Date.now() - began
    t.same(hung.map((r) => r.statusCode), [503, 503, 503])
    t.ok(hung.every((r) => r.headers['retry-after'] === '3'))
    // Statement timeout 2000 ms (+1000 ms on the client side), connection timeout 1000 ms.
    t.ok(elapsed < 6000, `answered in ${elapsed} ms, not left hanging`)
    await proxy.restore()
    let recovered = false
    for (let attempt = 0; attempt < 20 && !recovered; attempt++) {
      recovered = (await deliver()).statusCode === 200
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 250))
    }
    t.ok(recovered, 'stores again once the database answers')
  })

  // Regression: pg's client-side read timeout ("Query read timeout") was not seen as the store being
  // unavailable, so the API-key lookup of a hanging database ended in a 500.
  t.test('the management API while the database hangs, then while it refuses: 503 with Retry-After', async (t) => {
    // A key never used before: its lookup is the first query of each request.
    const key = await newKeyHeader(app, { global: true })
    const management = () =>
      Promise.all([`/api/v1/postback/conversions?sheet_id=${sheet}`, '/api/v1/postback/admin/sheets'].map((url) => app.inject({ method: 'GET', url, headers: key })))
    const unavailable = (responses: Awaited<ReturnType<typeof management>>) =>
      responses.map((r) => [r.statusCode, r.headers['retry-after'], r.json().error])

    proxy.pause()
    const began = Date.now()
    const hung = await management()
    const elapsed = Date.now() - began
    t.same(unavailable(hung), [[503, '3', 'storage_unavailable'], [503, '3', 'storage_unavailable']], 'hanging')
    t.ok(elapsed < 6000, `answered in ${elapsed} ms`)
    await proxy.restore()

    await proxy.cut()
    t.same(unavailable(await management()), [[503, '3', 'storage_unavailable'], [503, '3', 'storage_unavailable']], 'refusing connections')
    await proxy.restore()
    let recovered = false
    for (let attempt = 0; attempt < 20 && !recovered; attempt++) {
      recovered = (await management()).every((r) => r.statusCode === 200)
      if (!recovered) await new Promise((resolve) => setTimeout(resolve, 250))
    }
    t.ok(recovered, 'answers again once the database is back')
  })

  // The read timeout (StorePool's watch), where a statement hangs on the one connection of a store
  // of its own (no app: nothing else takes the connection). Read timeout: 500 + 1000 ms.
  const hangingStore = async (t: Test) => {
    const { proxy: held, url: heldUrl } = await startProxy()
    const db = await openDatabase(testConfig(t, { DATABASE_URL: heldUrl, DB_POOL_MAX: '1', DB_STATEMENT_TIMEOUT_MS: '500' }))
    // The proxy first: a close that a test found hanging then ends.
    t.teardown(async () => {
      await held.cut()
      await db.close()
    })
    return { db, proxy: held }
  }
  // A hot-path statement (run as a session function on a connection of the pool): 1 / divisor.
  const divide = (db: Database, divisor: number) =>
    db.query<{ quotient: number }>({ name: 'outage_divide', text: 'SELECT 1 / $1::int AS quotient', values: [divisor], signature: { parameters: ['divisor int'], returns: 'quotient int' } })
  const settled = (promise: Promise<unknown>, ms: number) => Promise.race([promise.then(() => 'resolved', (error: unknown) => error), delay(ms, 'still waiting')])

  t.test('a statement waiting for the server to be ready again (after an error) times out too', async (t) => {
    const { db, proxy: held } = await hangingStore(t)
    t.same(await divide(db, 1), [{ quotient: 1 }])
    // The server's error goes through, its ReadyForQuery does not: the connection goes back to the
    // pool (an error the server reported leaves it usable) and the next statement waits behind it.
    held.holdAfter('E')
    await t.rejects(divide(db, 0), { code: '22012' }, 'division by zero')
    const began = Date.now()
    const next = await settled(divide(db, 1), 5000)
    t.ok(next instanceof StoreUnavailableError && next.reason === 'timeout', `failed as the store timing out: ${String(next)}`)
    t.ok(Date.now() - began < 3000, `within the read timeout (${Date.now() - began} ms)`)
    await held.restore()
    t.same(await divide(db, 2), [{ quotient: 0 }], 'and a new connection answers')
  })

  t.test('closing the store while a statement hangs: the statement times out and the close ends', async (t) => {
    const { db, proxy: held } = await hangingStore(t)
    t.same(await divide(db, 1), [{ quotient: 1 }])
    held.pause()
    const hanging = settled(divide(db, 1), 5000)
    // The pool hands its idle connection over on a later tick; by the next turn of the event loop
    // the statement is on it (closed before that, the pool would end the idle connection instead).
    await nextTurn()
    const began = Date.now()
    t.equal(await settled(db.close(), 5000), 'resolved', 'the store closed')
    t.ok(Date.now() - began < 3000, `within the read timeout (${Date.now() - began} ms)`)
    const outcome = await hanging
    t.ok(outcome instanceof StoreUnavailableError && outcome.reason === 'timeout', `the statement failed as the store timing out: ${String(outcome)}`)
  })

  t.test('closing the store while a statement runs, the database hanging after its answer: the close ends', async (t) => {
    const { db, proxy: held } = await hangingStore(t)
    t.same(await divide(db, 1), [{ quotient: 1 }])
    // The next answer goes through whole; then the database hangs: the Terminate pg sends when the
    // pool ends the connection (given back after the close began) never reaches the server, which
    // never closes it, and the pool waits for it.
    held.holdAfter('Z')
    const answered = divide(db, 3)
    // On the connection by now, its answer not yet back (it comes through the proxy, in this process).
    await nextTurn()
    const began = Date.now()
    const closed = settled(db.close(), 5000)
    t.same(await answered, [{ quotient: 0 }], 'the statement answered')
    t.equal(await closed, 'resolved', 'the store closed')
    t.ok(Date.now() - began < 3000, `within the read timeout (${Date.now() - began} ms)`)
  })
}
