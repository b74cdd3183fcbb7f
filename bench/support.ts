// Helpers shared by the benchmark scripts.
import { readdirSync, readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import pg from 'pg'
import { createApiKey } from '../src/api-keys.ts'
import { BATCH_STATEMENT, writeDeliveries } from '../src/conversion-batch.ts'
import type { Database, SqlSession, Statement } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'
import { foldAll } from '../src/rollups.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { createSheet } from '../src/sheets.ts'

/** The arguments of bench/server.ts after its backlog for each floor route: the floor, the bare floor (bench/floor.ts). */
export const FLOOR_MODES: Record<string, string[]> = { floor: ['floor'], 'bare-floor': ['floor', 'bare'] }

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

/**
 * List pages timed on the database of bench:scale (bench/scale.ts, bench/list-pages.ts): a busy sheet
 * (300 ads a0..a299, campaigns c0..c9, a seventh of the conversions in EUR, none rejected) and five
 * small sheets; paths under /api/v1/postback, read with a global key.
 */
export const LIST_SHAPES: Array<[string, string]> = [
  ['list, first page', '/conversions?sheet_id=busy'],
  ['list, filtered by ad', '/conversions?sheet_id=busy&ad_id=a7'],
  ['list, a status no row has', '/conversions?sheet_id=busy&status=rejected'],
  ['list, an ad no row has', '/conversions?sheet_id=busy&ad_id=a300'],
  ['list, global key, no sheet_id', '/conversions'],
  ['list, global key, by currency', '/conversions?currency=EUR'],
  ['list, global key, by ad', '/conversions?ad_id=a7'],
  ['list, global key, by campaign and status', '/conversions?campaign_id=c3&status=pending'],
  ['list, a campaign and status no row has', '/conversions?sheet_id=busy&campaign_id=c3&status=approved'],
  ['list, global key, a status no row has', '/conversions?status=rejected'],
]

/**
 * GET requests to the management API of an app in this process (bench/scale.ts, bench/list-pages.ts),
 * with a global key (a non-200 answer throws): a route's time (the median of `rounds` after one
 * unmeasured request) and the cursor after some pages of a list.
 */
export async function managementReader(app: FastifyInstance) {
  const { key } = await createApiKey(app.prisma, { global: true })
  const headers = { authorization: `Bearer ${key}` }
  const get = async (url: string) => {
    const response = await app.inject({ url: `/api/v1/postback${url}`, headers })
    if (response.statusCode !== 200) throw new Error(`${url}: ${response.statusCode} ${response.body}`)
    return response
  }
  return {
    get,
    async timed(url: string, rounds: number): Promise<{ ms: number; body: unknown }> {
      const times: number[] = []
      let body: unknown
      for (let i = 0; i <= rounds; i++) {
        const started = performance.now()
        body = (await get(url)).json()
        if (i > 0) times.push(performance.now() - started)
      }
      return { ms: times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!, body }
    },
    /** The cursor after `pages` pages of a list (`url` has a query), or null when it ends before. */
    async cursorAfter(url: string, pages: number): Promise<string | null> {
      let cursor: string | null = null
      for (let page = 0; page < pages; page++) {
        cursor = ((await get(`${url}${cursor ? `&cursor=${cursor}` : ''}`)).json() as { next_cursor: string | null }).next_cursor
        if (!cursor) return null
      }
      return cursor
    },
  }
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

/** Writes `count` new conversions through the receiver's batch statement: 50 a statement, 4 statements in flight. */
export async function writeNewConversions(db: Database, count: number, delivery: () => Partial<Delivery> & { sheet_id: string; transaction_id: string }): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < count) {
        next += 50
        await writeDeliveries((statement) => db.query(statement), Array.from({ length: 50 }, delivery) as Delivery[])
      }
    }),
  )
}

/**
 * Runs `round` (which writes `rowsPerRound` rows) on each of two variants in turn, `rounds` times,
 * the first variant first in even rounds and second in odd ones, so that the machine's changing load
 * falls on both alike; prints each variant's rows/s and the first's ratio to the second (overall, per
 * round and the median of the rounds).
 */
export async function alternatingRounds<V extends { label: string }>(variants: [V, V], rounds: number, rowsPerRound: number, round: (variant: V) => Promise<void>): Promise<void> {
  const totals = new Map<string, number>()
  const roundRatios: number[] = []
  for (let index = 0; index < rounds; index++) {
    const rates = new Map<string, number>()
    for (const variant of index % 2 === 0 ? variants : [...variants].reverse()) {
      const started = performance.now()
      await round(variant)
      const ms = performance.now() - started
      totals.set(variant.label, (totals.get(variant.label) ?? 0) + ms)
      rates.set(variant.label, rowsPerRound / ms)
    }
    roundRatios.push(rates.get(variants[0].label)! / rates.get(variants[1].label)!)
  }
  const rate = (variant: V) => (rounds * rowsPerRound) / (totals.get(variant.label)! / 1000)
  for (const variant of variants) console.log(`${variant.label.padEnd(20)} ${rate(variant).toFixed(0)} rows/s`)
  const sorted = [...roundRatios].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  const median = sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
  console.log(
    `ratio ${variants[0].label} / ${variants[1].label}: ${(rate(variants[0]) / rate(variants[1])).toFixed(3)} overall; per round ${roundRatios.map((r) => r.toFixed(2)).join(' ')}, median ${median.toFixed(3)}`,
  )
}

/** CPU seconds (user + system) a process has used, from /proc. */
export function cpuSeconds(pid: number | 'self'): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100
  } catch {
    return 0
  }
}

/**
 * CPU seconds used by PostgreSQL for the benchmark: the backends connected to its database, and
 * (`shared`) the WAL writer, checkpointer and background writer, which also work for every other
 * database of the server, so other work on the machine shows in them, and the autovacuum workers
 * of its database, whose work falls on whichever route happens to be measured. Other databases'
 * backends are left out. Process titles read "postgres: 15/main: walwriter" (with the cluster's
 * name) or "postgres: walwriter".
 */
export function postgresCpuSeconds(database: string | undefined): Map<number, { seconds: number; shared: boolean }> {
  const seconds = new Map<number, { seconds: number; shared: boolean }>()
  if (!database) return seconds
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'postgres') continue
      const title = readFileSync(`/proc/${entry}/cmdline`, 'utf8')
      const ours = title.includes(` ${database} `) || title.includes(` ${database}\0`)
      const shared = /^postgres: (?:[^:]+: )?(walwriter|checkpointer|background writer)/.test(title) || (ours && title.includes('autovacuum worker'))
      if (shared || ours) seconds.set(Number(entry), { seconds: cpuSeconds(Number(entry)), shared })
    } catch {
      // Gone meanwhile.
    }
  }
  return seconds
}

/** CPU seconds PostgreSQL's processes used between two snapshots (a process that ended meanwhile is left out). */
export function postgresCpuUsed(before: ReturnType<typeof postgresCpuSeconds>, after: ReturnType<typeof postgresCpuSeconds>) {
  const used = { backends: 0, shared: 0 }
  for (const [pid, { seconds, shared }] of after) used[shared ? 'shared' : 'backends'] += seconds - (before.get(pid)?.seconds ?? 0)
  return used
}

/** Idle and total CPU time of the machine (all cores), in clock ticks, from /proc/stat; I/O wait counts as idle. */
export function machineTicks(): { idle: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  // user nice system idle iowait irq softirq steal (guest and guest_nice, next, are counted in user and nice).
  return { idle: fields[3]! + fields[4]!, total: fields.slice(0, 8).reduce((sum, value) => sum + value, 0) }
}

/**
 * `db.query` with the batch statement's function under another name and with plan_cache_mode =
 * force_generic_plan among its settings: its plans made once and kept, where PostgreSQL's own choice
 * (auto, as the app runs it) makes a batch of a few rows a custom plan at each call. For
 * bench/statement-cost.ts and bench/pglite-statement.ts (tried in the app on 2026-12-01 and undone:
 * BENCHMARKS.md, tenth pass).
 */
export function withCachedPlan(db: Database): Database['query'] {
  return <Row>(statement: Statement) =>
    db.query<Row>(
      statement.name !== BATCH_STATEMENT.name
        ? statement
        : {
            ...statement,
            name: `${statement.name}_cached`,
            signature: { ...statement.signature!, settings: [...(statement.signature!.settings ?? []), 'plan_cache_mode = force_generic_plan'] },
          },
    )
}

/** The --rows option of the benches (conversions to fill the bench's sheet with); a usage error ends the process. */
export function rowsOption(text: string): number {
  const rows = Number(text)
  // The fill's generate_series counts in int.
  const most = 2 ** 31 - 1
  if (Number.isInteger(rows) && rows >= 0 && rows <= most) return rows
  console.error(`--rows ${text}: give a whole number of conversions, 0 to ${most}`)
  process.exit(2)
}

/**
 * The bench's `n`th new transaction id of a run: a hash of `n` first, so that new ids land all over
 * the key's index, as a network's click ids do (not all at its right-hand end, after every filled
 * id), then the run's prefix and `n`, which keep it unique. bench/wrk/postback.lua spreads its ids the same way.
 */
export function spreadId(prefix: string, n: number): string {
  return `${(Math.imul(n, 2654435761) >>> 0).toString(16).padStart(8, '0')}-${prefix}-${n}`
}

/**
 * After the fill, and after each clean between mixes: the planner's statistics and the visibility
 * map brought up to date (`tables`, or all), and the WAL written out now rather than by a
 * checkpoint during the next mix.
 */
export async function settle(session: SqlSession, tables = ''): Promise<void> {
  await session.exec(`VACUUM ANALYZE ${tables}`)
  await session.exec('CHECKPOINT')
}

/** Rows a statement of `fillConversions` inserts: each is a transaction of its own, so folds can split the fill. */
const FILL_CHUNK = 250_000

/**
 * A bench store made ready: migrated, the bench's sheet created (USD), and, with `rows` > 0, that
 * many conversions filled and folded (fillConversions). Returns the last filled conversion's id
 * ('0' without rows). For a PostgreSQL database whose servers start after it, and for the PGlite
 * folder that each server's folder is copied from.
 */
export async function prepareBenchStore(db: Database, sheet: string, rows: number, onProgress?: (message: string) => void): Promise<string> {
  await db.withSession((session) => migrate(session))
  await createSheet(db.prisma, { sheetId: sheet, currency: 'USD' })
  return rows > 0 ? fillConversions(db, sheet, rows, onProgress) : '0'
}

/**
 * Fills `sheet` with `rows` stored conversions (transaction ids `f<n>`, in an order unrelated to
 * n, so they spread over the key's index), as a sheet that has been receiving for 90 days would
 * hold them: 300 ads in 10 campaigns and 50 ad sets, received over the 90 days before now, a tenth
 * pending, a seventh in EUR. Then folds them into the rollups and brings the planner's statistics and
 * the visibility map up to date (VACUUM ANALYZE), as autovacuum would have on a service that had
 * been running (PGlite runs no autovacuum: its VACUUM is the fill's). Returns the last filled
 * conversion's id: rows written later have greater ids.
 */
export async function fillConversions(db: Database, sheet: string, rows: number, onProgress?: (message: string) => void): Promise<string> {
  const started = performance.now()
  for (let from = 0; from < rows; from += FILL_CHUNK) {
    const to = Math.min(rows, from + FILL_CHUNK)
    await db.withSession((session) =>
      session.query(
        `INSERT INTO conversions (sheet_id, transaction_id, status, network_status, payout, currency, campaign_id, adset_id, ad_id, received_at)
         SELECT $1, 'f' || md5(n::text), CASE WHEN n % 10 = 0 THEN 'pending' ELSE 'approved' END,
           CASE WHEN n % 10 = 0 THEN 'lead' END, (n % 5000) * 0.01,
           CASE WHEN n % 7 = 0 THEN 'EUR' ELSE 'USD' END, 'c' || (n % 10), 's' || (n % 50), 'a' || (n % 300),
           now() - make_interval(secs => (n::bigint * 7919 % $4::int) * (90 * 86400.0 / $4::int))
         FROM generate_series($2::int, $3::int - 1) AS n`,
        [sheet, from, to, rows],
      ),
    )
    onProgress?.(`filled ${to} of ${rows} rows (${Math.round(to / ((performance.now() - started) / 1000))} rows/s)`)
  }
  const folding = performance.now()
  const folded = await foldAll(db.prisma)
  onProgress?.(`folded ${folded} changes in ${((performance.now() - folding) / 1000).toFixed(0)} s`)
  await db.withSession((session) => settle(session))
  const [last] = await db.withSession((session) => session.query<{ id: string }>('SELECT max(id)::text AS id FROM conversions'))
  return last?.id ?? '0'
}
