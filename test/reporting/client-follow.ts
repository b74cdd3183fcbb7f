// followChanges of the client package against a listening app: it follows pages and long polls,
// waits out 429 and 503 by their Retry-After, throws other errors, and ends when its signal aborts.
import t from 'tap'
import { createClient, FeedError, followChanges, retryAfterMs, type Change } from '../../client/src/index.ts'
import { deliverAll, listen, newKeyHeader, newSheet, testApp } from '../helpers.ts'

t.test('followChanges retries network errors, waits out 503 and 429 by Retry-After, then follows the feed', async (t) => {
  const app = await testApp(t)
  const baseUrl = await listen(app)
  const sheet = await newSheet(app)
  const { authorization } = await newKeyHeader(app, { sheetIds: [sheet] })
  await deliverAll(app, [{ sheet_id: sheet, transaction_id: 'a', status: 'pending' }, { sheet_id: sheet, transaction_id: 'b' }])

  // The first requests fail: the network (an instance restarting), then refusals as a draining
  // instance (503) and a rate limit (429) give them.
  const refusals: Array<{ status: number; retryAfter: string; error: string } | 'network'> = [
    'network',
    { status: 503, retryAfter: '1', error: 'storage_unavailable' },
    { status: 429, retryAfter: '1', error: 'rate_limited' },
  ]
  const asked: number[] = []
  const retries: Array<{ status?: number; error?: unknown; delayMs: number }> = []
  const fetchWithRefusals: typeof fetch = async (input, init) => {
    asked.push(performance.now())
    const refusal = refusals.shift()
    if (!refusal) return fetch(input, init)
    if (refusal === 'network') throw new TypeError('fetch failed')
    return new Response(JSON.stringify({ error: refusal.error, message: 'later' }), {
      status: refusal.status,
      headers: { 'content-type': 'application/json', 'retry-after': refusal.retryAfter },
    })
  }
  const client = createClient({ baseUrl, apiKey: authorization.slice('Bearer '.length), fetch: fetchWithRefusals })
  const stop = new AbortController()
  const seen: Change[] = []
  const following = (async () => {
    for await (const change of followChanges(client, { sheet_id: sheet, signal: stop.signal, wait: 10, limit: 1, onRetry: (retry) => retries.push(retry) })) {
      seen.push(change)
      if (seen.length === 2) void deliverAll(app, [{ sheet_id: sheet, transaction_id: 'a', status: 'approved' }])
      if (seen.length === 3) stop.abort()
    }
  })()
  await following
  t.same(seen.map((change) => `${change.kind} ${change.conversion.transaction_id} ${change.conversion.status}`), ['stored a pending', 'stored b approved', 'updated a approved'])
  t.match(retries, [{ error: { message: 'fetch failed' }, delayMs: 1000 }, { status: 503, delayMs: 1000 }, { status: 429, delayMs: 1000 }], 'each retry reported')
  t.ok(asked[1]! - asked[0]! >= 950, `waited a second after the network error (${Math.round(asked[1]! - asked[0]!)} ms)`)
  t.ok(asked[2]! - asked[1]! >= 950, `a second after the 503 (${Math.round(asked[2]! - asked[1]!)} ms)`)
  t.ok(asked[3]! - asked[2]! >= 950, `and a second after the 429 (${Math.round(asked[3]! - asked[2]!)} ms)`)
})

t.test('followChanges throws other answers and ends when its signal aborts, also mid long poll', async (t) => {
  const app = await testApp(t)
  const baseUrl = await listen(app)
  const wrongKey = createClient({ baseUrl, apiKey: 'pbk_not_a_key' })
  const error = await (async () => {
    for await (const change of followChanges(wrongKey)) t.fail(`no change for a wrong key: ${change.position}`)
  })().catch((caught: unknown) => caught)
  t.type(error, FeedError)
  t.equal((error as FeedError).status, 401)
  t.equal((error as FeedError).body?.error, 'unauthorized')

  // A key of a new sheet: on PostgreSQL the database is shared with other tests.
  const { authorization } = await newKeyHeader(app, { sheetIds: [await newSheet(app)] })
  const client = createClient({ baseUrl, apiKey: authorization.slice('Bearer '.length) })
  const stop = new AbortController()
  const started = performance.now()
  setTimeout(() => stop.abort(), 300)
  for await (const change of followChanges(client, { signal: stop.signal, wait: 30 })) t.fail(`nothing was stored: ${change.position}`)
  t.ok(performance.now() - started < 5000, 'the iteration ended when the signal aborted, not after the 30 s poll')
})

t.test('Retry-After in seconds or as an HTTP date, kept within 250 ms and an hour', async (t) => {
  const now = Date.parse('2026-11-29T12:00:00Z')
  t.equal(retryAfterMs('3', now), 3000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 12:00:05 GMT', now), 5000)
  t.equal(retryAfterMs('Sun, 29 Nov 2026 11:00:00 GMT', now), 250, 'a date in the past: soon, not in a tight loop')
  t.equal(retryAfterMs('0', now), 250)
  t.equal(retryAfterMs('99999999', now), 3_600_000, 'at most an hour (a timer of weeks would fire at once)')
  t.equal(retryAfterMs(null, now), 1000, 'absent: a second')
  t.equal(retryAfterMs('soon', now), 1000, 'unreadable: a second')
  t.equal(retryAfterMs('1.5', now), 1000, 'not a date either')
})
