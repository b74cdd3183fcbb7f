// One source of truth: openapi.yaml and the client's types are what the code generates, the
// document lints clean, and it describes every route the app serves.
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'
import t from 'tap'
import { parse } from 'yaml'
import { buildApp } from '../../src/app.ts'
import { generateOpenApi, OPENAPI_FILE } from '../../src/openapi.ts'
import { testConfig } from '../helpers.ts'
import { ROOT } from '../processes.ts'

const run = promisify(execFile)
// On the test store (a copy of the migrated PGlite template, or DATABASE_URL's): `npm run openapi`'s
// own scratch PGlite would pay initdb here.
const generated = await generateOpenApi(testConfig(t))

t.test('openapi.yaml is the document the code generates (run `npm run openapi` after a route change)', async (t) => {
  t.equal(readFileSync(OPENAPI_FILE, 'utf8'), generated)
})

t.test('the typed client was generated from this openapi.yaml', async (t) => {
  const { stdout } = await run(process.execPath, [`${ROOT}/node_modules/openapi-typescript/bin/cli.js`, 'openapi.yaml'], { cwd: ROOT })
  t.equal(readFileSync(`${ROOT}/client/src/schema.ts`, 'utf8'), stdout)
})

t.test('redocly lint (recommended rules) reports no errors', async (t) => {
  const { stdout, stderr } = await run(process.execPath, [`${ROOT}/node_modules/@redocly/cli/bin/cli.js`, 'lint', '--format=json', 'openapi.yaml'], {
    cwd: ROOT,
    env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
  }).catch((error: { stdout: string; stderr: string }) => error)
  const report = JSON.parse(stdout) as { totals: { errors: number; warnings: number }; problems: Array<{ ruleId: string; message: string }> }
  t.equal(report.totals.errors, 0, report.problems.map((p) => `${p.ruleId}: ${p.message}`).join('\n') || stderr)
  t.comment(`redocly: ${report.totals.errors} errors, ${report.totals.warnings} warnings`)
})

// Operations routes left out of the API document on purpose (untagged, so @fastify/swagger hides
// them): Prometheus' scrape, the load balancer's probes, and Swagger UI's own pages (a prefix).
const DELIBERATELY_UNDOCUMENTED = ['GET /metrics', 'GET /livez', 'GET /readyz', 'GET /docs*']

t.test('every route the app serves is documented, with an operationId, summary, tags and described parameters', async (t) => {
  const document = parse(generated) as {
    paths: Record<string, Record<string, { operationId?: string; summary?: string; tags?: string[]; security?: unknown[]; parameters?: Array<{ name: string; description?: string }>; responses: Record<string, unknown> }>>
  }
  // The app as the server builds it (with its store, so the health routes are there); the hook is
  // added before any route, so it sees them all.
  const served: string[] = []
  const app = await buildApp(testConfig(t), {
    onRoute: (route) => {
      for (const method of [route.method].flat()) if (method !== 'HEAD') served.push(`${method} ${route.url.replace(/:(\w+)/g, '{$1}')}`)
    },
  })
  await app.ready()
  await app.close()
  const documented = Object.entries(document.paths).flatMap(([path, operations]) => Object.keys(operations).map((method) => `${method.toUpperCase()} ${path}`))
  const named = (entry: string, route: string) => (entry.endsWith('*') ? route.startsWith(entry.slice(0, -1)) : route === entry)
  const hidden = (route: string) => DELIBERATELY_UNDOCUMENTED.some((entry) => named(entry, route))

  t.same(served.filter((route) => !hidden(route) && !documented.includes(route)), [], 'no route missing from the document')
  t.same(documented.filter((route) => !served.includes(route)), [], 'every documented operation is served')
  for (const entry of DELIBERATELY_UNDOCUMENTED) t.ok(served.some((route) => named(entry, route)), `${entry}, named as undocumented on purpose, is served`)
  t.same(documented.filter(hidden), [], 'and is not in the document')

  for (const [path, operations] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const name = `${method.toUpperCase()} ${path}`
      t.ok(operation.operationId && operation.summary && operation.tags?.length, `${name}: operationId, summary, tags`)
      for (const parameter of operation.parameters ?? []) t.ok(parameter.description, `${name}: parameter ${parameter.name} is described`)
      const codes = Object.keys(operation.responses)
      if (path.startsWith('/api/')) {
        t.same(operation.security, [{ bearerAuth: [] }], `${name}: bearer security`)
        for (const code of ['400', '401', '403', '429', '503']) t.ok(codes.includes(code), `${name}: documents ${code}`)
      } else {
        t.same(operation.security, [], `${name}: no security`)
        for (const code of ['200', '400', '404', '429', '503']) t.ok(codes.includes(code), `${name}: documents ${code}`)
      }
    }
  }
})
