// Crash safety: after kill -9 under load, every delivery that got a 2xx is in the store when it is
// opened again, here by an app in this process (on the embedded store, the killed process's lock is
// taken over). The long version, restarting servers over several rounds, is `npm run chaos`.
import t from 'tap'
import { admin, storeEnv, testApp, uniqueId } from '../helpers.ts'
import { loadGenerator, startServer } from '../processes.ts'

t.test('kill -9 under load loses no acknowledged delivery', async (t) => {
  const env = storeEnv(t)
  const sheet = uniqueId('crash')
  t.equal((await admin(env, 'sheet', 'create', '--id', sheet)).code, 0)

  const first = await startServer(env)
  t.teardown(() => first.child.kill('SIGKILL'))
  const load = loadGenerator(first.url, sheet, 20, 'k')
  // Killed once deliveries are being acknowledged, with 20 more in flight: not after a fixed time,
  // which on a busy machine can end before the first answer.
  const deadline = Date.now() + 60_000
  while (load.acknowledged.length < 200 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  first.child.kill('SIGKILL')
  await first.child.output
  await load.stop()
  t.ok(load.acknowledged.length > 0, `${load.acknowledged.length} deliveries acknowledged before the kill (${JSON.stringify([...load.statuses])})`)

  const reopened = await testApp(t, env)
  const rows = await reopened.prisma.conversion.findMany({ where: { sheetId: sheet }, select: { transactionId: true } })
  const stored = new Set(rows.map((row) => row.transactionId))
  const missing = load.acknowledged.filter((id) => !stored.has(id))
  t.same(missing, [], `all ${load.acknowledged.length} acknowledged deliveries are stored (${stored.size} rows)`)
})
