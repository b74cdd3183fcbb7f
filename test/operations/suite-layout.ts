// The suite runs one process per area (.taprc): test/<area>.test.ts imports the files of
// test/<area>/. A file that its area's runner does not import would never run; this finds one.
import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'

const TEST_DIR = new URL('..', import.meta.url)

t.test('every file of test/<area>/ is imported by test/<area>.test.ts, and every import exists', async (t) => {
  const runners = readdirSync(TEST_DIR).filter((name) => name.endsWith('.test.ts'))
  t.ok(runners.length >= 7, `${runners.length} area runners`)
  for (const runner of runners) {
    const area = runner.slice(0, -'.test.ts'.length)
    const imported = [...readFileSync(new URL(runner, TEST_DIR), 'utf8').matchAll(/import\('\.\/([^']+)'\)/g)].map((match) => match[1]!).sort()
    const files = readdirSync(new URL(`${area}/`, TEST_DIR))
      .filter((name) => name.endsWith('.ts'))
      .map((name) => `${area}/${name}`)
      .sort()
    t.ok(files.length > 0, `test/${area}/ has files`)
    t.same(imported, files, `test/${runner} imports exactly the files of test/${area}/`)
  }
})
