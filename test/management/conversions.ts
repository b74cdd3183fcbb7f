// The summary's time-zone check (src/conversions.ts): the database computes the day buckets, so its
// zone list is the authority, read once per client rather than on every summary request.
import t from 'tap'
import { summarize } from '../../src/conversions.ts'
import type { Database, PrismaClient } from '../../src/database.ts'
import { testApp } from '../helpers.ts'

const app = await testApp(t)

/** The app's client, counting the queries that read pg_timezone_names. */
function countingZoneReads(): { db: Database; reads: () => number } {
  let reads = 0
  const prisma = app.prisma.$extends({
    query: {
      async $allOperations({ args, query }) {
        if (JSON.stringify(args ?? null).includes('pg_timezone_names')) reads++
        return query(args)
      },
    },
  })
  return { db: { ...app.db, prisma: prisma as unknown as PrismaClient }, reads: () => reads }
}

// Regression: every summary read pg_timezone_names (17 to 32 ms a request).
t.test('summaries read the database zone list once', async (t) => {
  const { db, reads } = countingZoneReads()
  const query = { group_by: 'campaign', interval: 'day' } as const
  await summarize(db, [], { ...query, tz: 'Europe/Berlin' })
  await summarize(db, [], { ...query, tz: 'America/New_York' })
  await Promise.all([summarize(db, [], { ...query, tz: 'Asia/Tokyo' }), summarize(db, [], { ...query, tz: 'Europe/Berlin' })])
  await t.rejects(summarize(db, [], { ...query, tz: 'Mars/Olympus' }), { name: 'InputError', parameter: 'tz' })
  t.equal(reads(), 1)
})

t.test('IANA names only: UTC yes, abbreviations and unknown names no', async (t) => {
  const { db } = countingZoneReads()
  const query = { group_by: 'campaign', interval: 'day' } as const
  for (const tz of ['UTC', 'Europe/Berlin', 'America/Argentina/Buenos_Aires']) {
    t.same(await summarize(db, [], { ...query, tz }), [], tz)
  }
  for (const tz of ['PST', 'EST', 'utc', 'Europe/Nowhere', 'US/Pacific-New', '']) {
    await t.rejects(summarize(db, [], { ...query, tz }), { name: 'InputError', parameter: 'tz' }, JSON.stringify(tz))
  }
})
