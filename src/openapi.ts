// `npm run openapi`: writes openapi.yaml from the route schemas (building the app without opening a
// database), then the typed client's types from it. A test fails when either file is stale.
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { buildApp } from './app.ts'
import { loadConfig } from './config.ts'

export const OPENAPI_FILE = fileURLToPath(new URL('../openapi.yaml', import.meta.url))

/** The OpenAPI document as YAML, from the same app the server runs. */
export async function generateOpenApi(): Promise<string> {
  const app = await buildApp(loadConfig({ LOG_LEVEL: 'silent' }), { storage: false })
  try {
    await app.ready()
    return app.swagger({ yaml: true })
  } finally {
    await app.close()
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(OPENAPI_FILE, await generateOpenApi())
  console.log(`wrote ${OPENAPI_FILE}`)
}
