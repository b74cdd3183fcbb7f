// The statements of one group-commit batch and how their rows answer the deliveries. The batching
// policy (queue, timing, splitting around bad rows) is src/conversion-writer.ts.
import type { Database } from './database.ts'
import { allowedMoveSql, type ConversionStatus } from './lifecycle.ts'
import type { Delivery } from './schemas/receiver.ts'

export interface WriteResult {
  status: 'stored' | 'updated' | 'duplicate'
  conversionId: string
  /** The conversion's status after the delivery. */
  conversionStatus: ConversionStatus
}

/** The outcome of one key of a statement: its row, or null when its sheet is unknown or disabled. */
export type KeyOutcome = WriteResult | null

/**
 * The batch statement committed, then the read of the keys it did not write failed: `written` has
 * the outcomes of the keys it wrote or named unknown, which stand; the others have none.
 */
export class LookupFailedError extends Error {
  constructor(
    readonly written: Map<string, KeyOutcome>,
    cause: unknown,
  ) {
    super('reading the stored rows of a batch failed', { cause })
  }
}

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
 * Writes deliveries of distinct keys in one statement, plus a read when some keys were not written
 * (repeats, refused moves, a race with another batch), and returns each key's outcome, by key. Each
 * delivery is inserted, or moves its stored conversion when the lifecycle allows the move; anything
 * else changes nothing. When that read fails, LookupFailedError carries what was written.
 */
export async function writeDeliveries(query: Database['query'], deliveries: Delivery[]): Promise<Map<string, KeyOutcome>> {
  // Sorted so that concurrent batches (on any instance) take row locks in the same order.
  const rows = [...deliveries].sort(compareDeliveries)
  const column = <K extends keyof Delivery>(name: K) => textArray(rows.map((row) => row[name] ?? null))
  const written = await query<BatchRow>({
    ...BATCH_STATEMENT,
    values: [
      column('sheet_id'),
      column('transaction_id'),
      textArray(rows.map((row) => row.event ?? '')),
      column('payout'),
      column('currency'),
      column('campaign_id'),
      column('adset_id'),
      column('ad_id'),
      textArray(rows.map(statusOf)),
      column('network_status'),
    ],
  })
  const outcomes = new Map<string, KeyOutcome>()
  // Stored rows read in the same call (PGlite, BATCH_STATEMENT's signature): each answers its key
  // unless the batch statement's own rows did. Rows of keys not in the batch are left unused.
  let readInCall = false
  for (const row of written) {
    const key = keyOf(row)
    if (row.outcome !== 'duplicate') outcomes.set(key, row.outcome === 'unknown_sheet' ? null : { status: row.outcome, conversionId: row.id!, conversionStatus: row.status! })
    else if (!outcomes.has(key)) {
      readInCall = true
      outcomes.set(key, { status: 'duplicate', conversionId: row.id!, conversionStatus: row.status! })
    }
  }
  // The keys are distinct, and the batch statement's rows are of the batch's keys: a row for each
  // of them, the common case, leaves nothing to look up.
  if (!readInCall && outcomes.size === rows.length) return outcomes
  const keys = rows.map(keyOf)
  // The keys the statement neither wrote nor named unknown: repeats, refused moves, and keys whose
  // first delivery a concurrent batch committed while ours waited for it. A new statement (a new
  // snapshot) reads what is stored for them now.
  const rest = new Set<string>()
  const sheets = new Set<string>()
  const transactions = new Set<string>()
  const events = new Set<string>()
  rows.forEach((row, index) => {
    const key = keys[index]!
    if (outcomes.has(key)) return
    rest.add(key)
    sheets.add(row.sheet_id)
    transactions.add(row.transaction_id)
    events.add(row.event ?? '')
  })
  if (rest.size > 0) {
    let stored: BatchRow[]
    try {
      stored = await query<BatchRow>({ ...STORED_STATEMENT, values: [textArray([...sheets]), textArray([...transactions]), textArray([...events])] })
    } catch (error) {
      throw new LookupFailedError(outcomes, error)
    }
    for (const row of stored) {
      const key = keyOf(row)
      if (rest.has(key)) outcomes.set(key, { status: 'duplicate', conversionId: row.id!, conversionStatus: row.status! })
    }
  }
  // A key with no row is a sheet disabled meanwhile.
  for (const key of keys) if (!outcomes.has(key)) outcomes.set(key, null)
  return outcomes
}

// The stored rows of the keys the batch statement did not write, for their answers (duplicate, with
// the conversion's id and status): every row whose sheet, transaction id and event are among theirs
// (a batch's repeats are mostly of one sheet; rows of other combinations are left out by the caller).
// One table and arrays (`= ANY`, which the key's index probes once per combination): planned in
// about 70 µs at each run, against 80 for a join of the keys, and always for the table as it is. Not
// a prepared statement: a generic plan made while the table was nearly empty was seen probing
// (sheet_id, received_at, id) and reading every row of the sheet for each key (bench, fresh
// database: 3,900 instead of 14,000 deliveries/s, 330 µs of PostgreSQL's CPU per delivery), and
// after an ANALYZE of an empty table it is a sequential scan, kept until the next ANALYZE. Batches
// without repeats do not run it.
const STORED_TEXT = `
    SELECT c.id::text AS id, c.sheet_id, c.transaction_id, c.event, c.status, 'duplicate' AS outcome
    FROM conversions c
    WHERE c.sheet_id = ANY($1::text[]) AND c.transaction_id = ANY($2::text[]) AND c.event = ANY($3::text[])
      AND EXISTS (SELECT FROM sheets s WHERE s.sheet_id = c.sheet_id AND s.active)`
const STORED_STATEMENT = { text: STORED_TEXT }

// One statement per batch. It inserts the new conversions and moves the stored ones whose move the
// lifecycle allows (ON CONFLICT DO UPDATE ... WHERE: the check runs on the newest committed version
// of the row, under its lock, so concurrent moves of one key apply one at a time), and names the
// rows whose sheet is unknown or disabled. A move replaces payout and currency only when the
// delivery carries them. Ids are cast to text: the two stores' query paths type bigint differently.
// It reads no stored row: a batch of new conversions, the common case, costs one insert per row,
// as in the floor. On PostgreSQL it is a prepared statement, on PGlite a function of the session
// (its `signature`, src/database.ts); either way its plan may be cached as a generic plan made once, possibly while the tables were nearly empty: its only lookup (the sheet, a table
// of few rows) is a LATERAL with OFFSET 0, planned as a per-row probe of the sheets' primary key.
const BATCH_TEXT = `
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
    SELECT NULL, sheet_id, transaction_id, event, NULL, 'unknown_sheet' FROM input WHERE default_currency IS NULL`

export const BATCH_STATEMENT = {
  name: 'postback_conversion_batch_v4',
  signature: {
    parameters: Array<string>(10).fill('text[]'),
    returns: 'id text, sheet_id text, transaction_id text, event text, status text, outcome text',
    // On PGlite, when some keys got no row (repeats, refused moves), their stored rows are read by
    // the same call: its one connection runs no other batch between the two statements. The lookup
    // is planned at each run (EXECUTE) for the reason STORED_STATEMENT is, and leaves out the rows
    // this call wrote (their row version is of this transaction), which the batch statement
    // answered: every key of the batch has a row by then. A separate statement through PGlite's
    // query cost about 0.65 ms a batch (24 rows, half of them repeats; 0.84 ms the batch statement
    // itself).
    declare: 'answered bigint;',
    body: `
      RETURN QUERY ${BATCH_TEXT};
      GET DIAGNOSTICS answered = ROW_COUNT;
      IF answered < cardinality($1) THEN
        RETURN QUERY EXECUTE $stored$${STORED_TEXT} AND c.xmin <> pg_current_xact_id()::xid$stored$ USING $1, $2, $3;
      END IF;`,
  },
  text: BATCH_TEXT,
}

/**
 * A text[] parameter as PostgreSQL's array literal, written by JSON.stringify: without a backslash
 * in it (no '"' or '\\' in any value, and no control character, which validation refuses), JSON's
 * quoted strings are the literal's quoted elements, and its null is NULL. Anything else goes as the
 * array, for the driver to write. The drivers' own writers (pg's, PGlite's) build each element by
 * concatenation and two replaces: a tenth of the receiver's allocations, 72 against 41 ns an element.
 */
export function textArray(values: Array<string | null>): string | Array<string | null> {
  const json = JSON.stringify(values)
  return json.includes('\\') ? values : `{${json.slice(1, -1)}}`
}

// By sheet, transaction id, then event, without allocating: it runs for every pair a sort compares.
function compareDeliveries(a: Delivery, b: Delivery): number {
  if (a.sheet_id !== b.sheet_id) return a.sheet_id < b.sheet_id ? -1 : 1
  if (a.transaction_id !== b.transaction_id) return a.transaction_id < b.transaction_id ? -1 : 1
  const ea = a.event ?? ''
  const eb = b.event ?? ''
  return ea === eb ? 0 : ea < eb ? -1 : 1
}
