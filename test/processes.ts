// Helpers for tests that run the service's own programs as separate processes.
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('..', import.meta.url))

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
