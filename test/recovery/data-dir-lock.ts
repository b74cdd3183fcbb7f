// The embedded store's folder is one process's: a second opener fails at once naming the folder,
// and a lock left by a killed process does not block the next start.
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import t from 'tap'
import { lockDataDir } from '../../src/data-dir-lock.ts'
import { pgliteCopy, scratchDir } from '../helpers.ts'
import { ROOT, run, start, startServer, waitForOutput } from '../processes.ts'

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
  // "At once" against a wait on the lock, which would last until the test's timeout: the process's
  // own start-up (tsx, the app's modules) took 11 s once on this 2-core machine under a full suite.
  t.ok(Date.now() - began < 30_000, `refused in ${Date.now() - began} ms`)

  owner.kill('SIGKILL')
  await owner.output
  const next = start(hold, { DATA_DIR: dir, DATABASE_URL: '' })
  t.teardown(() => next.kill('SIGKILL'))
  await waitForOutput(next, 'open')
  t.pass('the store opens after its owner was killed')
})

t.test('the lock in one process', async (t) => {
  const dir = scratchDir(t, 'postback-lock-')
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
  const dir = scratchDir(t, 'postback-lock-')
  writeFileSync(join(dir, 'postback-store.lock'), JSON.stringify({ pid: process.pid, startTime: '1' }))
  const lock = lockDataDir(dir)
  t.pass('taken over')
  lock.release()
})

t.test('a lock held by another live process is refused', async (t) => {
  const dir = scratchDir(t, 'postback-lock-')
  // pid 1 is alive; with a null start time it cannot be told stale.
  writeFileSync(join(dir, 'postback-store.lock'), JSON.stringify({ pid: 1, startTime: null }))
  t.throws(() => lockDataDir(dir), { name: 'DataDirLockedError', message: `data folder ${dir} is in use by process 1` })
})

/** Field 3 (state) and field 22 (start time) of /proc/PID/stat. */
function stat(pid: number): { state: string; startTime: string } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return { state: fields[0]!, startTime: fields[19]! }
}

async function untilZombie(pid: number): Promise<string> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const { state, startTime } = stat(pid)
    if (state === 'Z') return startTime
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`process ${pid} did not become a zombie`)
}

/**
 * A real zombie: `sleep 0.2` run in the background by a shell that then execs `sleep 30`, which never
 * reaps it. The child outlives the exec (with `sleep 0`, a loaded machine let the shell reap it first).
 */
async function zombie(t: { teardown(fn: () => unknown): void }): Promise<{ pid: number; startTime: string }> {
  const parent = spawn('sh', ['-c', 'sleep 0.2 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => parent.kill('SIGKILL'))
  const pid = Number(await new Promise<string>((resolve) => parent.stdout!.once('data', (chunk) => resolve(String(chunk)))))
  return { pid, startTime: await untilZombie(pid) }
}

// Regression: after `kill -9` of a process group started by `npm start`, the server lingers as a
// zombie until someone reaps it, and a supervisor's immediate restart was refused.
t.test('a lock whose owner is a zombie (dead, not yet reaped) is taken over', async (t) => {
  const dir = scratchDir(t, 'postback-lock-')
  const owner = await zombie(t)
  writeFileSync(join(dir, 'postback-store.lock'), JSON.stringify(owner))
  const lock = lockDataDir(dir)
  t.pass(`taken over from zombie ${owner.pid}`)
  lock.release()
})

t.test('the server killed with -9 and not yet reaped: an immediate restart on the same folder starts', async (t) => {
  const dir = pgliteCopy(t)
  // npm, then sh, then tsx's CLI, then the server, in a process group of their own.
  const npm = spawn('npm', ['start'], { cwd: ROOT, detached: true, env: { ...process.env, DATA_DIR: dir, DATABASE_URL: '', PORT: '0', LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'ignore'] })
  const group = (signal: NodeJS.Signals) => {
    try {
      process.kill(-npm.pid!, signal)
    } catch {
      // Already gone.
    }
  }
  t.teardown(() => group('SIGKILL'))
  await waitForOutput(npm, 'Server listening', 60_000)
  const server = JSON.parse(readFileSync(join(dir, 'postback-store.lock'), 'utf8')) as { pid: number }
  // Killing the whole group leaves the server a zombie only until init reaps it (about 1.7 s here):
  // with its parent stopped first, it stays one for as long as the restart takes.
  group('SIGSTOP')
  process.kill(server.pid, 'SIGKILL')
  await untilZombie(server.pid)

  const restarted = await startServer({ DATA_DIR: dir, DATABASE_URL: '' })
  t.teardown(() => restarted.child.kill('SIGKILL'))
  t.equal((await fetch(`${restarted.url}/readyz`)).status, 200, `restarted while the killed server ${server.pid} is a zombie`)
})
