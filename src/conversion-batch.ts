// The statements of one group-commit batch and how their rows answer the deliveries. The batching
// policy (queue, timing, splitting around bad rows) is src/conversion-writer.ts.
import type { Database } from './database.ts'
import { allowedMoveSql, isAllowedMove, type ConversionStatus } from './lifecycle.ts'
import type { Delivery } from './schemas/receiver.ts'

export interface WriteResult {
  status: 'stored' | 'updated' | 'duplicate'
  conversionId: string
  /** The conversion's status after the delivery. */
  conversionStatus: ConversionStatus
}

/** The outcome of one key of a statement: its row, or null when its sheet is unknown or disabled. */
export type KeyOutcome = WriteResult | null

interface BatchRow {
  id: string | null
  sheet_id: string
  transaction_id: string
  event: string
  status: ConversionStatus | null
  outcome: 'stored' | 'updated' | 'duplicate' | 'unknown_sheet'
}

/** The idempotency key of a delivery: its sheet, event and transaction id. */
export function keyOf(d: { sheet_id: string; transaction_id: string; event?: string | null }): string {
  const event = d.event ?? ''
  return `${d.sheet_id.length}:${d.sheet_id}${event.length}:${event}${d.transaction_id}`
}

export const statusOf = (delivery: Delivery): ConversionStatus => delivery.status ?? 'approved'

/**
 * Writes deliveries of distinct keys in one statement (two if a concurrent batch raced it) and
 * returns each key's outcome, by key. Each delivery is inserted, or moves its stored conversion
 * when the lifecycle allows the move; anything else changes nothing.
 */
export async function writeDeliveries(query: Database['query'], deliveries: Delivery[]): Promise<Map<string, KeyOutcome>> {
  // Sorted so that concurrent batches (on any instance) take row locks in the same order.
  const rows = [...deliveries].sort(compareDeliveries)
  const column = <K extends keyof Delivery>(name: K) => rows.map((row) => row[name] ?? null)
  const written = await query<BatchRow>({
    ...BATCH_STATEMENT,
    values: [
      column('sheet_id'),
      column('transaction_id'),
      rows.map((row) => row.event ?? ''),
      column('payout'),
      column('currency'),
      column('campaign_id'),
      column('adset_id'),
      column('ad_id'),
      rows.map(statusOf),
      column('network_status'),
    ],
  })
  const keys = rows.map(keyOf)
  const outcomes = new Map<string, KeyOutcome>()
  for (const row of written) {
    const key = keyOf(row)
    // A key's snapshot row (`duplicate`) yields to the row this statement stored or updated.
    if (row.outcome === 'duplicate' && outcomes.has(key)) continue
    if (row.outcome === 'unknown_sheet') outcomes.set(key, null)
    else outcomes.set(key, { status: row.outcome, conversionId: row.id!, conversionStatus: row.status! })
  }
  // Keys to read again, after our statement: those with no row (a concurrent batch committed their
  // first delivery after our snapshot was taken; our INSERT waited for it and found it), and those
  // whose snapshot row would have allowed the move although nothing moved (a concurrent batch moved
  // it first). A new statement sees what those batches committed.
  const stale = rows.filter((row, index) => {
    const outcome = outcomes.get(keys[index]!)
    return outcome === undefined || (outcome?.status === 'duplicate' && isAllowedMove(outcome.conversionStatus, statusOf(row)))
  })
  if (stale.length > 0) {
    const committed = await query<BatchRow>({
      ...COMMITTED_STATEMENT,
      values: [stale.map((d) => d.sheet_id), stale.map((d) => d.transaction_id), stale.map((d) => d.event ?? '')],
    })
    for (const key of stale.map(keyOf)) outcomes.set(key, null)
    for (const row of committed) outcomes.set(keyOf(row), { status: 'duplicate', conversionId: row.id!, conversionStatus: row.status! })
  }
  for (const key of keys) if (!outcomes.has(key)) outcomes.set(key, null)
  return outcomes
}

// One statement per batch. It inserts the new conversions and moves the stored ones whose move the
// lifecycle allows (ON CONFLICT DO UPDATE ... WHERE: the check runs on the newest committed version
// of the row, under its lock, so concurrent moves of one key apply one at a time); in the same round
// trip it reads the stored rows of the other keys (repeats, refused moves) and names the rows whose
// sheet is unknown or disabled. A move replaces payout and currency only when the delivery carries
// them. The snapshot read never sees the rows this statement writes; the caller prefers the
// stored/updated row of a key. Ids are cast to text: the two stores' query paths type bigint
// differently.
// On PostgreSQL it is a prepared statement, whose plan may be cached as a generic plan made once
// without the parameters, possibly while the tables were nearly empty. The lookups are LATERAL
// with OFFSET 0, which keeps them per-row index probes in any plan (a join could turn into a hash
// join over the whole conversions table on every batch).
const BATCH_STATEMENT = {
  name: 'postback_conversion_batch_v2',
  text: `
    WITH input AS (
      SELECT i.*, s.default_currency
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
             WITH ORDINALITY AS i(sheet_id, transaction_id, event, payout, currency, campaign_id, adset_id, ad_id, status, network_status, ord)
      LEFT JOIN LATERAL (SELECT s.default_currency FROM sheets s WHERE s.sheet_id = i.sheet_id AND s.active OFFSET 0) s ON true
    ), written AS (
      INSERT INTO conversions AS c (sheet_id, transaction_id, event, payout, currency, campaign_id, adset_id, ad_id, status, network_status)
      SELECT sheet_id, transaction_id, event, payout::numeric, COALESCE(currency, default_currency), campaign_id, adset_id, ad_id, status, network_status
      FROM input
      WHERE default_currency IS NOT NULL
      ORDER BY ord
      ON CONFLICT (sheet_id, transaction_id, event) DO UPDATE SET
        status = excluded.status,
        network_status = excluded.network_status,
        payout = COALESCE(excluded.payout, c.payout),
        currency = COALESCE(
          (SELECT i.currency FROM input i
           WHERE i.sheet_id = excluded.sheet_id AND i.transaction_id = excluded.transaction_id AND i.event = excluded.event),
          c.currency),
        updated_at = now()
      WHERE ${allowedMoveSql('c.status', 'excluded.status')}
      RETURNING c.id, c.sheet_id, c.transaction_id, c.event, c.status, c.updated_at IS NULL AS inserted
    )
    SELECT id::text AS id, sheet_id, transaction_id, event, status,
      CASE WHEN inserted THEN 'stored' ELSE 'updated' END AS outcome
    FROM written
    UNION ALL
    SELECT c.id::text, c.sheet_id, c.transaction_id, c.event, c.status, 'duplicate'
    FROM input i
    CROSS JOIN LATERAL (
      SELECT c.id, c.sheet_id, c.transaction_id, c.event, c.status FROM conversions c
      WHERE c.sheet_id = i.sheet_id AND c.transaction_id = i.transaction_id AND c.event = i.event OFFSET 0
    ) c
    WHERE i.default_currency IS NOT NULL
    UNION ALL
    SELECT NULL, sheet_id, transaction_id, event, NULL, 'unknown_sheet' FROM input WHERE default_currency IS NULL`,
}

// The rows of keys that a concurrent batch inserted or moved after our statement's snapshot.
const COMMITTED_STATEMENT = {
  name: 'postback_conversion_committed_v2',
  text: `
    SELECT c.id::text AS id, c.sheet_id, c.transaction_id, c.event, c.status, 'duplicate' AS outcome
    FROM unnest($1::text[], $2::text[], $3::text[]) AS k(sheet_id, transaction_id, event)
    CROSS JOIN LATERAL (
      SELECT c.id, c.sheet_id, c.transaction_id, c.event, c.status FROM conversions c
      WHERE c.sheet_id = k.sheet_id AND c.transaction_id = k.transaction_id AND c.event = k.event OFFSET 0
    ) c
    WHERE EXISTS (SELECT FROM sheets s WHERE s.sheet_id = k.sheet_id AND s.active)`,
}

// By sheet, transaction id, then event, without allocating: it runs for every pair a sort compares.
function compareDeliveries(a: Delivery, b: Delivery): number {
  if (a.sheet_id !== b.sheet_id) return a.sheet_id < b.sheet_id ? -1 : 1
  if (a.transaction_id !== b.transaction_id) return a.transaction_id < b.transaction_id ? -1 : 1
  const ea = a.event ?? ''
  const eb = b.event ?? ''
  return ea === eb ? 0 : ea < eb ? -1 : 1
}
