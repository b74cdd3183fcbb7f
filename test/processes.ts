// Helpers for tests that run the service's own programs as separate processes.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { admin } from './helpers.ts'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))

/** The server's line once it listens, with its URL. */
export const LISTENING = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/

export interface Finished {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export function start(args: string[], env: Record<string, string | undefined>): ChildProcess & { output: Promise<Finished> } {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout!.on('data', (chunk) => (stdout += chunk))
  child.stderr!.on('data', (chunk) => (stderr += chunk))
  const output = new Promise<Finished>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })),
  )
  return Object.assign(child, { output })
}

export function run(args: string[], env: Record<string, string | undefined>): Promise<Finished> {
  return start(args, env).output
}

/** Resolves when the child's stdout contains `text`. */
export function waitForOutput(child: ChildProcess, text: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = ''
    const timer = setTimeout(() => reject(new Error(`no "${text}" within ${timeoutMs} ms; got: ${seen}`)), timeoutMs)
    child.stdout!.on('data', (chunk) => {
      seen += chunk
      if (seen.includes(text)) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.on('close', () => reject(new Error(`exited before "${text}": ${seen}`)))
  })
}

/** Starts the server entry (src/server.ts) on a free port; resolves with its base URL once it listens. */
export async function startServer(env: Record<string, string | undefined>): Promise<{ url: string; child: ReturnType<typeof start> }> {
  const child = start(['--import=tsx', 'src/server.ts'], { LOG_LEVEL: 'info', PORT: '0', ...env })
  const url = await new Promise<string>((resolve, reject) => {
    let seen = ''
    const timer = setTimeout(() => reject(new Error(`server did not listen: ${seen}`)), 60_000)
    child.stdout!.on('data', (chunk) => {
      seen += chunk
      const match = LISTENING.exec(seen)
      if (match) {
        clearTimeout(timer)
        resolve(match[1]!)
      }
    })
    child.on('close', () => reject(new Error(`server exited: ${seen}`)))
  })
  return { url, child }
}

/**
 * Sends deliveries from `concurrency` parallel loops until stopped; returns the transaction ids
 * acknowledged with a 2xx and the status counts. Connection errors (a killed server) end a loop.
 */
export function loadGenerator(url: string, sheetId: string, concurrency: number, prefix: string) {
  let running = true
  const acknowledged: string[] = []
  const statuses = new Map<number | string, number>()
  let sequence = 0
  const loops = Array.from({ length: concurrency }, async () => {
    // eslint-disable-next-line no-unmodified-loop-condition -- stop() clears it while the loops await
    while (running) {
      const id = `${prefix}-${sequence++}`
      try {
        const response = await fetch(`${url}/meta/postback/conversion?sheet_id=${sheetId}&transaction_id=${id}`, { signal: AbortSignal.timeout(10_000) })
        await response.arrayBuffer()
        statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
        if (response.ok) acknowledged.push(id)
      } catch {
        statuses.set('error', (statuses.get('error') ?? 0) + 1)
        if (!running) return
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  })
  return {
    acknowledged,
    statuses,
    async stop() {
      running = false
      await Promise.all(loops)
    },
  }
}

/**
 * On the PostgreSQL of DATABASE_URL: a sheet with a read key (made by postback-admin), two server
 * processes with `env` (killed at teardown), and a connection of the test's own to read what is stored.
 */
export async function twoInstances(
  t: { teardown(fn: () => unknown): void },
  env: Record<string, string | undefined>,
  sheet: string,
): Promise<{
  apiKey: string
  servers: Array<{ url: string }>
  read: <Row>(sql: string, params: unknown[]) => Promise<Row[]>
  /** The servers' log lines at warn or above so far, for a failing assertion's diagnostics. */
  warnings: () => string[]
}> {
  if ((await admin(env, 'sheet', 'create', '--id', sheet)).code !== 0) throw new Error(`could not create sheet ${sheet}`)
  const apiKey = ((await admin(env, 'key', 'create', '--sheet', sheet)).result as { key: string }).key
  const servers = await Promise.all([startServer(env), startServer(env)])
  for (const server of servers) t.teardown(() => server.child.kill('SIGKILL'))
  const warnings: string[] = []
  for (const server of servers) {
    server.child.stdout!.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString().split('\n')) if (/"level":(40|50|60)/.test(line)) warnings.push(line)
    })
  }
  const db = new pg.Client({ connectionString: env.DATABASE_URL })
  await db.connect()
  t.teardown(() => db.end())
  return { apiKey, servers, read: async (sql, params) => (await db.query(sql, params)).rows, warnings: () => [...warnings] }
}
