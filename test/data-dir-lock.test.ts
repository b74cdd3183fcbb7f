// The embedded store's folder is one process's: a second opener fails at once naming the folder,
// and a lock left by a killed process does not block the next start.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import t from 'tap'
import { lockDataDir } from '../src/data-dir-lock.ts'
import { pgliteCopy } from './helpers.ts'
import { run, start, waitForOutput } from './processes.ts'

const hold = ['--import=tsx', 'test/fixtures/hold-store.ts']

t.test('a second process opening the folder fails at once, naming it; after kill -9 the next start opens it', async (t) => {
  const dir = pgliteCopy(t)
  const owner = start(hold, { DATA_DIR: dir, DATABASE_URL: '' })
  t.teardown(() => owner.kill('SIGKILL'))
  await waitForOutput(owner, 'open')

  const began = Date.now()
  const second = await run(hold, { DATA_DIR: dir, DATABASE_URL: '' })
  t.equal(second.code, 1)
  t.match(second.stderr, `data folder ${resolve(dir)} is in use by process ${owner.pid}`)
  t.ok(Date.now() - began < 10_000, `refused in ${Date.now() - began} ms`)

  owner.kill('SIGKILL')
  await owner.output
  const next = start(hold, { DATA_DIR: dir, DATABASE_URL: '' })
  t.teardown(() => next.kill('SIGKILL'))
  await waitForOutput(next, 'open')
  t.pass('the store opens after its owner was killed')
})

t.test('the lock in one process', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'postback-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const lock = lockDataDir(dir)
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockedError', message: /already open in this process/ })
  lock.release()
  lockDataDir(dir).release()

  writeFileSync(join(dir, 'postback-store.lock'), 'garbage')
  const taken = lockDataDir(dir)
  t.pass('an unreadable lock file is taken over')
  taken.release()
})

t.test('a lock with this process id but another start time is stale (a restarted container)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'postback-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'postback-store.lock'), JSON.stringify({ pid: process.pid, startTime: '1' }))
  const lock = lockDataDir(dir)
  t.pass('taken over')
  lock.release()
})

t.test('a lock held by another live process is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'postback-lock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // pid 1 is alive; with a null start time it cannot be told stale.
  writeFileSync(join(dir, 'postback-store.lock'), JSON.stringify({ pid: 1, startTime: null }))
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockedError', message: `data folder ${dir} is in use by process 1` })
})
