// The cost of the receiver's batch statement on PGlite, by the path it takes: as the app runs it
// (db.query: a function of the session, parsed once, its plans PGlite's choice, called by a
// statement prepared in the session), the same function called by PGlite's query, the same function
// on its cached plan (plan_cache_mode = force_generic_plan), as a plain statement (parsed and planned
// at each run), and through Prisma's raw query; beside them the floor's two statements
// (bench/floor.ts: the bare INSERT, and the upsert that makes moves, the floor the bench measures
// against), each as the floor runs it (a function of the session, called by a prepared statement),
// the upsert's function also called by PGlite's query, and each as a plain statement, on one
// PGlite folder, in alternating rounds. "÷ floor": against the upsert as the floor runs it.
//   npx tsx bench/pglite-statement.ts [--rows 29] [--statements 400] [--rounds 3]
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { run } from '../src/cli.ts'
import { loadConfig } from '../src/config.ts'
import { BATCH_STATEMENT, writeDeliveries } from '../src/conversion-batch.ts'
import { openDatabase, type Statement } from '../src/database.ts'
import type { Delivery } from '../src/schemas/receiver.ts'
import { FLOOR_INSERT, FLOOR_SIGNATURE, FLOOR_UPSERT, floorValues } from './floor.ts'
import { functionCall } from '../src/session-function.ts'
import { withCachedPlan } from './support.ts'

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '29' }, statements: { type: 'string', default: '400' }, rounds: { type: 'string', default: '3' } } })
const ROWS = Number(args.rows)
const STATEMENTS = Number(args.statements)
const dir = mkdtempSync(join(tmpdir(), 'pglite-statement-'))
const env = { DATA_DIR: dir, LOG_LEVEL: 'silent' }
const quiet = { stdout: { write: () => true }, stderr: { write: () => true } }
await run(['migrate'], env, quiet)
await run(['sheet', 'create', '--id', 'busy'], env, quiet)
const db = await openDatabase(loadConfig(env))
let n = 0
const batch = () => Array.from({ length: ROWS }, () => ({ sheet_id: 'busy', transaction_id: `t${n++}`, payout: '1.5', currency: 'USD', campaign_id: 'c1', adset_id: 's1', ad_id: 'a1' }) as Delivery)
const plain = <Row>(statement: Statement) => db.query<Row>({ text: statement.text, values: statement.values })
// A batch through one of the floor's statements (bench/floor.ts): as a plain statement, or (`asFunction`)
// as a function of the session, as bench/floor.ts runs it on PGlite (db.query makes it at its first use).
function floorBatch(statement: { name: string; text: string }, asFunction: boolean) {
  const values = floorValues(batch())
  return asFunction ? db.query({ ...statement, signature: FLOOR_SIGNATURE, values }) : plain({ text: statement.text, values })
}
const cached = withCachedPlan(db)
const paths: Array<[string, () => Promise<unknown>]> = [
  ['receiver, as the app runs it', () => writeDeliveries((statement) => db.query(statement), batch())],
  // The function called by PGlite's query (parsed, described and planned at each call), as until 2026-12-02.
  ['receiver, its call by PGlite\'s query', () => writeDeliveries((statement) => plain({ text: functionCall(statement), values: statement.values }), batch())],
  ['receiver, on its cached plan', () => writeDeliveries(cached, batch())],
  ['receiver, as a plain statement', () => writeDeliveries(plain, batch())],
  ['receiver, through Prisma', () => writeDeliveries((s) => db.prisma.$queryRawUnsafe(s.text, ...s.values), batch())],
  ['floor (bare INSERT)', () => floorBatch(FLOOR_INSERT, true)],
  ['floor (with moves)', () => floorBatch(FLOOR_UPSERT, true)],
  ['floor (moves), call by PGlite\'s query', () => {
    const values = floorValues(batch())
    return plain({ text: functionCall({ name: FLOOR_UPSERT.name, values }), values })
  }],
  ['floor (bare), as a plain statement', () => floorBatch(FLOOR_INSERT, false)],
  ['floor (with moves), as a plain statement', () => floorBatch(FLOOR_UPSERT, false)],
]
const totals = new Map<string, { ms: number; cpu: number }>()
for (let round = 0; round < Number(args.rounds); round++) {
  for (const [label, statement] of round % 2 === 0 ? paths : [...paths].reverse()) {
    for (let i = 0; i < 20; i++) await statement()
    const cpu = process.cpuUsage()
    const started = performance.now()
    for (let i = 0; i < STATEMENTS; i++) await statement()
    const total = totals.get(label) ?? { ms: 0, cpu: 0 }
    const used = process.cpuUsage(cpu)
    totals.set(label, { ms: total.ms + performance.now() - started, cpu: total.cpu + (used.user + used.system) / 1000 })
  }
}
const count = STATEMENTS * Number(args.rounds)
console.log(`${ROWS} new conversions a statement, ${count} statements per path, ${args.rounds} alternating rounds (${BATCH_STATEMENT.name})`)
const floor = totals.get('floor (with moves)')!.ms
for (const [label, { ms, cpu }] of totals) {
  console.log(`${label.padEnd(40)} ${(ms / count).toFixed(3)} ms a statement (${((ms / count / ROWS) * 1000).toFixed(1)} µs a row), CPU ${(cpu / count).toFixed(3)} ms, ÷ floor ${(ms / floor).toFixed(2)}`)
}
await db.close()
rmSync(dir, { recursive: true, force: true })
