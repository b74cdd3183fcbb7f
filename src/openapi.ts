// `npm run openapi`: writes openapi.yaml from the route schemas, then the typed client's types from it.
// A test fails when either file is stale.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { buildApp } from './app.ts'
import { loadConfig, type Config } from './config.ts'

export const OPENAPI_FILE = fileURLToPath(new URL('../openapi.yaml', import.meta.url))

/**
 * The OpenAPI document as YAML, from the same app the server runs, store included: the routes stand on
 * the store plugin, so the document is built with one open. By default that is a throwaway PGlite
 * folder, never DATABASE_URL's database nor DATA_DIR's data (which a running server may hold locked).
 */
export async function generateOpenApi(config?: Config): Promise<string> {
  const scratch = config ? undefined : mkdtempSync(join(tmpdir(), 'postback-openapi-'))
  try {
    // No migrations: building the document reads no table.
    const app = await buildApp(config ?? loadConfig({ LOG_LEVEL: 'silent', DATA_DIR: scratch, MIGRATE_ON_START: 'false' }))
    try {
      await app.ready()
      return app.swagger({ yaml: true })
    } finally {
      await app.close()
    }
  } finally {
    if (scratch) rmSync(scratch, { recursive: true, force: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OPENAPI_FILE, await generateOpenApi())
  console.log(`wrote ${OPENAPI_FILE}`)
}
