// Delivery diagnostics for "my network sends but nothing shows": the rejected-delivery log and the
// receiver status of one sheet (last delivery, last-24-hour counts, frequent rejection reasons).
import { decodeCursor, keysetPage, parseTime, type SheetScope } from './conversions.ts'
import { NotFoundError } from './errors.ts'
import { Prisma, type PrismaClient } from './generated/prisma/client.ts'
import type { Rejection, RejectionPage, RejectionQuery, SheetStatus } from './schemas/management.ts'

interface RejectionRow extends Omit<Rejection, 'id' | 'received_at'> {
  id_text: string
  received_at: Date
}

export async function listRejections(
  prisma: PrismaClient,
  scope: SheetScope,
  query: RejectionQuery,
): Promise<RejectionPage> {
  const limit = query.limit ?? 50
  const where: Prisma.Sql[] = []
  if (query.sheet_id !== undefined) where.push(Prisma.sql`sheet_id = ${query.sheet_id}`)
  if (scope !== null) where.push(Prisma.sql`sheet_id = ANY(${[...scope]}::text[])`)
  if (query.from !== undefined) where.push(Prisma.sql`received_at >= ${parseTime('from', query.from)}`)
  if (query.to !== undefined) where.push(Prisma.sql`received_at < ${parseTime('to', query.to)}`)
  if (query.cursor !== undefined) {
    const after = decodeCursor(query.cursor, 'desc')
    where.push(Prisma.sql`(received_at, id) < (${after.at}, ${after.id}::bigint)`)
  }
  const rows = await prisma.$queryRaw<RejectionRow[]>(Prisma.sql`
    SELECT id::text AS id_text, sheet_id, reason, parameter, raw_query, remote_address, test, received_at
    FROM delivery_rejections
    ${where.length ? Prisma.sql`WHERE ${Prisma.join(where, ' AND ')}` : Prisma.empty}
    ORDER BY received_at DESC, id DESC
    LIMIT ${limit + 1}`)
  return keysetPage(rows, limit, 'desc', ({ id_text, received_at, ...row }) => ({ id: id_text, ...row, received_at: received_at.toISOString() }))
}

const TOP_REASONS = 5

/**
 * The receiver side of one sheet. Stored deliveries are counted from the conversions themselves;
 * status updates, duplicates and rejections from hourly counters, so "the last 24 hours" is the last 24 hourly
 * buckets, the current one included.
 */
export async function sheetStatus(prisma: PrismaClient, sheetId: string): Promise<SheetStatus> {
  const [sheet] = await prisma.$queryRaw<
    Array<{ active: boolean; last_received_at: Date | null; last_rejected_at: Date | null; stored: number; last_test_at: Date | null; last_test_outcome: string | null }>
  >`
    SELECT s.active, s.last_test_at, s.last_test_outcome,
      (SELECT max(received_at) FROM conversions WHERE sheet_id = s.sheet_id) AS last_received_at,
      (SELECT max(received_at) FROM delivery_rejections WHERE sheet_id = s.sheet_id) AS last_rejected_at,
      (SELECT count(*)::int FROM conversions WHERE sheet_id = s.sheet_id AND received_at > now() - interval '24 hours') AS stored
    FROM sheets s WHERE s.sheet_id = ${sheetId}`
  if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
  const counters = await prisma.$queryRaw<Array<{ outcome: string; reason: string; count: number }>>`
    SELECT outcome, reason, sum(count)::int AS count FROM delivery_counters
    WHERE sheet_id = ${sheetId} AND hour > now() - interval '24 hours'
    GROUP BY outcome, reason`
  const total = (outcome: string) => counters.filter((row) => row.outcome === outcome).reduce((sum, row) => sum + row.count, 0)
  return {
    sheet_id: sheetId,
    active: sheet.active,
    last_received_at: sheet.last_received_at?.toISOString() ?? null,
    last_rejected_at: sheet.last_rejected_at?.toISOString() ?? null,
    last_24h: { stored: sheet.stored, updated: total('updated'), duplicate: total('duplicate'), rejected: total('rejected') },
    top_rejection_reasons: counters
      .filter((row) => row.outcome === 'rejected')
      .sort((a, b) => b.count - a.count || a.reason.localeCompare(b.reason))
      .slice(0, TOP_REASONS)
      .map(({ reason, count }) => ({ reason, count })),
    last_test: sheet.last_test_at ? { received_at: sheet.last_test_at.toISOString(), outcome: sheet.last_test_outcome ?? 'ok' } : null,
  }
}
