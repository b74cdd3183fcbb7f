// An exclusive lock on the embedded store's data folder. PGlite is one process's database: a second
// process opening the same folder would corrupt it. The lock file holds the owner's pid and start
// time; a lock whose owner is gone (killed with -9, say, even while still an unreaped zombie) is
// taken over, so a crash never blocks the next start.
import { randomBytes } from 'node:crypto'
import { linkSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

const LOCK_FILE = 'postback-store.lock'

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError'
}

interface Owner {
  pid: number
  startTime: string | null
}

/**
 * A process as the kernel sees it (Linux): its state and its start time, which tells a live owner
 * from a reused pid. Null when there is no such process, or no /proc to ask.
 */
function processInfo(pid: number): { state: string; startTime: string } | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name are space-separated: 3 (state) ... 22 (starttime).
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const [state, startTime] = [fields[0], fields[19]]
    return state && startTime ? { state, startTime } : null
  } catch {
    return null
  }
}

// A zombie (killed, not yet reaped by its parent) or a dead process holds nothing: after `kill -9`
// of a process group the server can linger as a zombie, and a supervisor's restart must not wait.
const GONE_STATES = new Set(['Z', 'X', 'x'])

function isAlive(owner: Owner): boolean {
  try {
    process.kill(owner.pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  const info = processInfo(owner.pid)
  if (info === null) return true
  if (GONE_STATES.has(info.state)) return false
  return owner.startTime === null || info.startTime === owner.startTime
}

function readLock(path: string): { text: string; owner: Owner | null } | null {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
  try {
    const owner = JSON.parse(text) as Owner
    return { text, owner: Number.isInteger(owner.pid) ? owner : null }
  } catch {
    return { text, owner: null }
  }
}

export interface DataDirLock {
  release(): void
}

export function lockDataDir(dataDir: string): DataDirLock {
  const folder = resolve(dataDir)
  const path = join(folder, LOCK_FILE)
  const me: Owner = { pid: process.pid, startTime: processInfo(process.pid)?.startTime ?? null }
  const mine = JSON.stringify(me)
  for (let attempt = 0; attempt < 5; attempt++) {
    // Written aside, then linked into place: the lock appears whole or not at all.
    const staged = `${path}.${process.pid}.${randomBytes(4).toString('hex')}`
    writeFileSync(staged, mine)
    try {
      linkSync(staged, path)
      return {
        release() {
          if (readLock(path)?.text === mine) rmSync(path, { force: true })
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    } finally {
      rmSync(staged, { force: true })
    }
    const current = readLock(path)
    if (!current) continue
    const { owner } = current
    if (owner && isAlive(owner)) {
      const here = owner.pid === me.pid && owner.startTime === me.startTime
      throw new DataDirLockedError(
        here
          ? `data folder ${folder} is already open in this process`
          : `data folder ${folder} is in use by process ${owner.pid}; stop it first, or set DATA_DIR to another folder`,
      )
    }
    // The owner is gone (killed, or a container restarted with the same pid). Move its lock aside
    // with one atomic rename, so that of several processes taking over only one removes it; if what
    // was moved is not the lock judged stale, another process took over first: put theirs back.
    const aside = `${path}.stale.${process.pid}.${randomBytes(4).toString('hex')}`
    try {
      renameSync(path, aside)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw error
    }
    if (readLock(aside)?.text !== current.text) {
      try {
        linkSync(aside, path)
      } catch {
        // A third process holds the lock now; the loop reports it.
      }
    }
    rmSync(aside, { force: true })
  }
  throw new DataDirLockedError(`data folder ${folder}: could not take its lock; another process keeps taking it`)
}
