// The cost of the receiver's batch statement on PostgreSQL by batch size, one statement after
// another: as the app runs it (a function of the session, its plans PostgreSQL's choice:
// plan_cache_mode = auto, a custom plan made again at each call while that looks cheaper, as it does
// for a batch of a few rows), the same function on its cached plan (force_generic_plan), and the
// floor's upsert (bench/floor.ts) as a prepared statement, as the floor runs it and on its cached
// plan; alternating rounds, new conversions only. Per statement: wall time, this process's CPU
// and the CPU of PostgreSQL's backends for the scratch database (from /proc).
//   npx tsx bench/statement-cost.ts [--sizes 4,25] [--statements 500] [--rounds 4] [--pg-url URL]
import { parseArgs } from 'node:util'
import pg from 'pg'
import { run } from '../src/cli.ts'
import { loadConfig } from '../src/config.ts'
import { BATCH_STATEMENT, writeDeliveries } from '../src/conversion-batch.ts'
import { openDatabase } from '../src/database.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { FLOOR_UPSERT, floorValues } from './floor.ts'
import { postgresCpuSeconds, postgresCpuUsed, scratchDatabase, table, withCachedPlan } from './support.ts'

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '4,25' },
    statements: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '4' },
    'pg-url': { type: 'string', default: 'postgresql://postgres@127.0.0.1:5432/postgres' },
  },
})
const STATEMENTS = Number(args.statements)
const ROUNDS = Number(args.rounds)
const scratch = await scratchDatabase(args['pg-url'], `statement_cost_${process.pid}`)
const database = new URL(scratch.url).pathname.slice(1)
const env = { DATABASE_URL: scratch.url, LOG_LEVEL: 'silent', DB_POOL_MAX: '1' }
// Each path on a connection of its own: the session's cached plans (and PostgreSQL's record of
// custom against generic plan costs) are per connection.
const open: Array<{ close(): Promise<void> }> = []
try {
  const quiet = { stdout: { write: () => true }, stderr: { write: () => true } }
  await run(['migrate'], env, quiet)
  await run(['sheet', 'create', '--id', 'busy'], env, quiet)
  const db = await openDatabase(loadConfig(env))
  open.push(db)
  const other = await openDatabase(loadConfig(env))
  open.push(other)
  const cached = withCachedPlan(other)
  const floorPool = (options?: string) => {
    // No idle timeout: a path waits while the others run. An idle connection's error is not fatal here.
    const pool = new pg.Pool({ connectionString: scratch.url, max: 1, options, idleTimeoutMillis: 0 })
    pool.on('error', () => undefined)
    open.push({ close: () => pool.end() })
    return pool
  }
  const floorAuto = floorPool()
  const floorCached = floorPool('-c plan_cache_mode=force_generic_plan')
  let n = 0
  const batch = (rows: number) =>
    Array.from(
      { length: rows },
      () => ({ sheet_id: 'busy', transaction_id: `t${n++}`, payout: '12.50', currency: 'USD', campaign_id: '120210000000000001', adset_id: '120210000000000002', ad_id: '120210000000000003' }) as Delivery,
    )
  const floor = (pool: pg.Pool) => (rows: Delivery[]) => pool.query({ ...FLOOR_UPSERT, values: floorValues(rows) })
  const paths: Array<[string, (rows: Delivery[]) => Promise<unknown>]> = [
    ['receiver, as the app runs it', (rows) => writeDeliveries((statement) => db.query(statement), rows)],
    ['receiver, on its cached plan', (rows) => writeDeliveries(cached, rows)],
    ['floor (with moves), as bench/floor.ts runs it', floor(floorAuto)],
    ['floor (with moves), on its cached plan', floor(floorCached)],
  ]
  const lines = [['rows', 'path', 'wall µs a statement', 'this process µs', 'PostgreSQL µs']]
  for (const size of args.sizes.split(',').map(Number)) {
    const totals = new Map<string, { ms: number; cpu: number; postgres: number }>()
    // Warm-up of every path first (JIT, the connections' plans), so the first path measured pays no more.
    for (const [, statement] of paths) for (let i = 0; i < 200; i++) await statement(batch(size))
    for (let round = 0; round < ROUNDS; round++) {
      for (const [label, statement] of round % 2 === 0 ? paths : [...paths].reverse()) {
        const before = postgresCpuSeconds(database)
        const cpu = process.cpuUsage()
        const started = performance.now()
        for (let i = 0; i < STATEMENTS; i++) await statement(batch(size))
        const ms = performance.now() - started
        const used = process.cpuUsage(cpu)
        const total = totals.get(label) ?? { ms: 0, cpu: 0, postgres: 0 }
        total.ms += ms
        total.cpu += (used.user + used.system) / 1000
        total.postgres += postgresCpuUsed(before, postgresCpuSeconds(database)).backends * 1000
        totals.set(label, total)
      }
    }
    const each = (ms: number) => ((1000 * ms) / (ROUNDS * STATEMENTS)).toFixed(0)
    for (const [label, total] of totals) lines.push([String(size), label, each(total.ms), each(total.cpu), each(total.postgres)])
  }
  console.log(`${STATEMENTS} statements per path and size in each of ${ROUNDS} alternating rounds, each path on a connection of its own (${BATCH_STATEMENT.name})\n\n${table(lines)}`)
} finally {
  try {
    await Promise.allSettled(open.map((connection) => connection.close()))
  } finally {
    await scratch.drop()
  }
}
