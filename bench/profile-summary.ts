// Summarises a V8 CPU profile (from `npm run bench -- --cpu-prof DIR`): self time by function and by
// package or source folder, so BENCHMARKS.md can say where a request's time goes.
// Usage: tsx bench/profile-summary.ts FILE.cpuprofile [TOP]
import { readFileSync } from 'node:fs'
import { argv } from 'node:process'

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

const [file, topText = '25'] = argv.slice(2)
if (!file) {
  console.error('usage: tsx bench/profile-summary.ts FILE.cpuprofile [TOP]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map((node) => [node.id, node]))
// Self time per node: each sample's time delta goes to the node that was on top of the stack.
const self = new Map<number, number>()
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
// Percentages are of the time the thread was busy: a server idles while it waits for its clients
// or for the database, and in `npm run bench` also while load goes to the other servers.
const idleIds = new Set(profile.nodes.filter((node) => node.callFrame.functionName === '(idle)').map((node) => node.id))
const sampled = [...self.values()].reduce((a, b) => a + b, 0)
const total = [...self].filter(([id]) => !idleIds.has(id)).reduce((a, [, us]) => a + us, 0)

function where(url: string): string {
  if (!url) return '(native / V8)'
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
const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)} %`
console.log(`${file}: ${(sampled / 1e6).toFixed(1)} s sampled, ${(total / 1e6).toFixed(1)} s busy; percentages of the busy time`)
console.log('\nself time by package / source file:')
for (const [place, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${place}`)
console.log('\nself time by function:')
for (const [name, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(us)}  ${name}`)
