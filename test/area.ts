// One test process per area (.taprc): test/<area>.test.ts calls runArea, which imports every file
// of test/<area>/ in the root's t.before, so that a file's top-level await (opening an app or a
// store) never finds the tests of the files before it done and the root ended. A file added to the
// folder runs without being listed anywhere; each also runs alone: npx tap test/<area>/<file>.ts
import { readdirSync } from 'node:fs'
import t from 'tap'

export function runArea(runnerUrl: string): void {
  const area = new URL(runnerUrl).pathname.split('/').at(-1)!.replace(/\.test\.ts$/, '')
  const folder = new URL(`${area}/`, runnerUrl)
  t.before(async () => {
    const files = readdirSync(folder).filter((name) => name.endsWith('.ts')).sort()
    if (files.length === 0) throw new Error(`test/${area}/ has no test files`)
    for (const file of files) await import(new URL(file, folder).href)
  })
}
