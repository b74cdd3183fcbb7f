// An exclusive lock on the embedded store's data folder. PGlite is one process's database: a second
// process opening the same folder would corrupt it. The lock file holds the owner's pid and start
// time; a lock whose owner is gone (killed with -9, say) is taken over, so a crash never blocks the
// next start.
import { linkSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'

const LOCK_FILE = 'postback-store.lock'

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError'
}

interface Owner {
  pid: number
  startTime: string | null
}

/** The kernel's start time of a process (Linux), which tells a live owner from a reused pid. */
function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 22 (starttime); fields after the parenthesised command name are space-separated.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null
  } catch {
    return null
  }
}

function isAlive(owner: Owner): boolean {
  try {
    process.kill(owner.pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  const startTime = processStartTime(owner.pid)
  return owner.startTime === null || startTime === null || startTime === owner.startTime
}

function readOwner(path: string): Owner | null {
  try {
    const owner = JSON.parse(readFileSync(path, 'utf8')) as Owner
    return Number.isInteger(owner.pid) ? owner : null
  } catch {
    return null
  }
}

export interface DataDirLock {
  release(): void
}

export function lockDataDir(dataDir: string): DataDirLock {
  const folder = resolve(dataDir)
  const path = join(folder, LOCK_FILE)
  const me: Owner = { pid: process.pid, startTime: processStartTime(process.pid) }
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      // Written aside, then linked into place: the lock appears whole or not at all.
      const staged = `${path}.${process.pid}`
      writeFileSync(staged, JSON.stringify(me))
      try {
        linkSync(staged, path)
      } finally {
        rmSync(staged, { force: true })
      }
      return {
        release() {
          if (readOwner(path)?.pid === me.pid) rmSync(path, { force: true })
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    const owner = readOwner(path)
    if (owner && owner.pid !== process.pid && isAlive(owner)) {
      throw new DataDirLockedError(
        `data folder ${folder} is in use by process ${owner.pid}; stop it first, or set DATA_DIR to another folder`,
      )
    }
    if (owner?.pid === process.pid) {
      throw new DataDirLockedError(`data folder ${folder} is already open in this process`)
    }
    // The owner is gone: take the lock over.
    rmSync(path, { force: true })
  }
  throw new DataDirLockedError(`data folder ${folder}: could not take its lock; another process keeps taking it`)
}
