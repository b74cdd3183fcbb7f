// Summarises a V8 CPU profile (from `npm run bench -- --cpu-prof DIR`): self time by function and by
// package or source folder, so BENCHMARKS.md can say where a request's time goes.
// Usage: tsx bench/profile-summary.ts FILE.cpuprofile [TOP] [--window FROM,TO] [--scale N]
//   --window: only the samples between these fractions of the profile's span (0.3,0.95: start-up and
//     shutdown left out); --scale: each share also as a part of N (say the CPU µs a delivery that
//     the bench measured for that server), so two servers' profiles compare in µs a delivery.
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  hitCount?: number
}
interface Profile {
  nodes: Node[]
  samples: number[]
  timeDeltas: number[]
  startTime: number
  endTime: number
}

const { values: options, positionals } = parseArgs({ allowPositionals: true, options: { window: { type: 'string' }, scale: { type: 'string' } } })
const [file, topText = '25'] = positionals
const [from, to] = (options.window ?? '0,1').split(',').map(Number) as [number, number]
const scale = options.scale === undefined ? undefined : Number(options.scale)
if (!file || !(from >= 0 && to <= 1 && from < to) || (scale !== undefined && !(scale > 0))) {
  console.error('usage: tsx bench/profile-summary.ts FILE.cpuprofile [TOP] [--window FROM,TO (fractions, 0 <= FROM < TO <= 1)] [--scale N (> 0)]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map((node) => [node.id, node]))
// Self time per node: each sample's time delta goes to the node that was on top of the stack. A
// sample's time is the profile's start plus the deltas up to it; those outside the window are left out.
const span = profile.endTime - profile.startTime
const [windowStart, windowEnd] = [profile.startTime + from * span, profile.startTime + to * span]
const self = new Map<number, number>()
let at = profile.startTime
profile.samples.forEach((id, i) => {
  at += profile.timeDeltas[i] ?? 0
  if (at >= windowStart && at <= windowEnd) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0))
})
// Percentages are of the time the thread was busy: a server idles while it waits for its clients
// or for the database, and in `npm run bench` also while load goes to the other servers.
const idleIds = new Set(profile.nodes.filter((node) => node.callFrame.functionName === '(idle)').map((node) => node.id))
const sampled = [...self.values()].reduce((a, b) => a + b, 0)
const total = [...self].filter(([id]) => !idleIds.has(id)).reduce((a, [, us]) => a + us, 0)

function where(url: string): string {
  if (!url) return '(native / V8)'
  if (url.startsWith('wasm://')) return '(WebAssembly: PGlite\'s PostgreSQL)'
  const modules = url.lastIndexOf('node_modules/')
  if (modules !== -1) {
    const rest = url.slice(modules + 'node_modules/'.length).split('/')
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!
  }
  if (url.startsWith('node:')) return 'node core'
  const match = /\/(src|plugins|bench)\/(.*)$/.exec(url)
  return match ? `${match[1]}/${match[2]}` : url
}

const byFunction = new Map<string, number>()
const byPlace = new Map<string, number>()
for (const [id, us] of self) {
  if (idleIds.has(id)) continue
  const node = byId.get(id)!
  const { functionName, url, lineNumber } = node.callFrame
  const place = where(url)
  const key = `${functionName || '(anonymous)'} ${place}${url ? `:${lineNumber + 1}` : ''}`
  byFunction.set(key, (byFunction.get(key) ?? 0) + us)
  byPlace.set(place, (byPlace.get(place) ?? 0) + us)
}
const top = Number(topText)
const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)} %${scale === undefined ? '' : `  ${((scale * us) / total).toFixed(2).padStart(7)}`}`
const window = from === 0 && to === 1 ? '' : ` between ${from} and ${to} of its span`
console.log(`${file}${window}: ${(sampled / 1e6).toFixed(1)} s sampled, ${(total / 1e6).toFixed(1)} s busy; percentages of the busy time${scale === undefined ? '' : `, then the same shares of ${scale}`}`)
console.log('\nself time by package / source file:')
for (const [place, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${place}`)
console.log('\nself time by function:')
for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${name}`)
