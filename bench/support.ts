// Helpers shared by the benchmark scripts.
import pg from 'pg'

/**
 * Environment of every server under test. All load comes from one address to one sheet, so the
 * receiver's rate limits (RECEIVER_RATE_LIMIT, RECEIVER_FLOOD_LIMIT: 6,000 and 60,000 a minute by
 * default) are set out of reach: the limiter still counts each request, but none is refused.
 * Variables a version of the app does not know are ignored by its config.
 */
export const BENCH_SERVER_ENV: Record<string, string> = {
  RECEIVER_RATE_LIMIT: '100000000',
  RECEIVER_FLOOD_LIMIT: '100000000',
}

/** A Markdown table; the first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)))
  const line = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i]!)).join(' | ')} |`
  return [line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n')
}

/** One statement on a connection of its own (CREATE / DROP DATABASE; the server may have restarted meanwhile). */
export async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    await client.query(sql)
  } finally {
    await client.end()
  }
}

/** NAME=VALUE pairs as an environment map. */
export function envPairs(pairs: string[]): Record<string, string> {
  return Object.fromEntries(pairs.map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]))
}

/** A new database on the server of `adminUrl` (a database URL to connect to for CREATE), and its URL. */
export async function scratchDatabase(adminUrl: string, name: string): Promise<{ url: string; drop: () => Promise<void> }> {
  await adminQuery(adminUrl, `CREATE DATABASE ${name}`)
  const url = new URL(adminUrl)
  url.pathname = `/${name}`
  return { url: url.toString(), drop: () => adminQuery(adminUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`) }
}
