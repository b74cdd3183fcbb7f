// ChunkWriter (src/file-lines.ts), which the import and the reconciliation write their rows through:
// chunks written one at a time in order, up to `depth` of them queued before a push waits, and a
// failed write stopping every chunk queued after it.
import t from 'tap'
import { ChunkWriter } from '../../src/file-lines.ts'

/** A write that records its chunk and finishes when the test says so. */
function controlledWrites() {
  const started: number[][] = []
  const finish: Array<(error?: Error) => void> = []
  const write = (rows: number[]) =>
    new Promise<void>((resolve, reject) => {
      started.push(rows)
      finish.push((error) => (error ? reject(error) : resolve()))
    })
  return { started, finish, write }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

t.test('chunks are written in order, one at a time; up to depth full chunks wait before a push does', async (t) => {
  const { started, finish, write } = controlledWrites()
  const writer = new ChunkWriter<number>(2, write, 2)
  const waits = [1, 2, 3, 4, 5, 6].map((row) => writer.push(row))
  t.same(
    waits.map((wait) => wait !== undefined),
    [false, true, false, true, false, true],
    'a push that fills a chunk returns a wait',
  )
  let waited = false
  void waits[5]!.then(() => (waited = true))
  await tick()
  t.same(started, [[1, 2]], 'one write at a time')
  t.notOk(waited, 'three full chunks queued, depth two: the third push waits')
  finish[0]!()
  await tick()
  t.same(started, [[1, 2], [3, 4]], 'the next chunk is written once the one before it is done')
  t.ok(waited, 'two queued again: the push goes on')
  writer.push(7)
  const done = writer.done()
  finish[1]!()
  await tick()
  finish[2]!()
  await tick()
  t.same(started, [[1, 2], [3, 4], [5, 6], [7]], 'done writes what is left, last')
  finish[3]!()
  await done
})

t.test('a failed write: no chunk queued after it is written, and the failure reaches the pushes and done', async (t) => {
  const { started, finish, write } = controlledWrites()
  const writer = new ChunkWriter<number>(1, write, 3)
  // Four chunks: the fourth push waits for the first write.
  const waits = [1, 2, 3, 4].map((row) => writer.push(row))
  await tick()
  finish[0]!(new Error('disk full'))
  await t.rejects(waits[3]!, /disk full/, 'the push waiting for it fails')
  await tick()
  t.same(started, [[1]], 'the chunks queued after the failed one were not written')
  await t.rejects(writer.done(), /disk full/)
  t.same(started, [[1]])
})
