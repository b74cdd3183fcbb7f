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
 * Writes deliveries of distinct keys by one call of the batch statement, which also reads the stored
 * rows of the keys it did not write (repeats, refused moves, a race with another batch) when the
 * batch has up to IN_CALL_KEYS keys; a separate read takes any keys left. Returns each key's
 * outcome, by key. Each delivery is inserted, or moves its stored conversion when the lifecycle
 * allows the move; anything else changes nothing. When the separate read fails, LookupFailedError
 * carries what was written.
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
  for (const row of written) {
    // `duplicate`: a stored row read by the same call (BATCH_STATEMENT's body), in a later snapshot;
    // it never stands in for an answer of the insert or of the sheets read before it. A key named
    // unknown whose sheet was enabled again while the call waited on a lock has its stored row read
    // too, in the same statement as its `unknown_sheet` row and in either order: `unknown_sheet`
    // always sets the answer, `duplicate` only a key that has none yet.
    if (row.outcome === 'duplicate') {
      const key = keyOf(row)
      if (!outcomes.has(key)) outcomes.set(key, { status: 'duplicate', conversionId: row.id!, conversionStatus: row.status! })
    } else outcomes.set(keyOf(row), row.outcome === 'unknown_sheet' ? null : { status: row.outcome, conversionId: row.id!, conversionStatus: row.status! })
  }
  // The keys are distinct, and every row is of one of them: a row for each, the common case,
  // leaves nothing to look up.
  if (outcomes.size === rows.length) return outcomes
  const keys = rows.map(keyOf)
  // The keys the call neither wrote, named unknown, nor read: those of a batch of more than
  // IN_CALL_KEYS keys (repeats, refused moves, keys whose first delivery a concurrent batch committed
  // while ours waited for it), or of a sheet disabled meanwhile. A new statement (a new snapshot)
  // reads what is stored for them now.
  const rest = rows.filter((_, index) => !outcomes.has(keys[index]!))
  if (rest.length > 0) {
    let stored: BatchRow[]
    try {
      stored = await query<BatchRow>({
        ...STORED_STATEMENT,
        values: [textArray(rest.map((d) => d.sheet_id)), textArray(rest.map((d) => d.transaction_id)), textArray(rest.map((d) => d.event ?? ''))],
      })
    } catch (error) {
      throw new LookupFailedError(outcomes, error)
    }
    for (const row of stored) outcomes.set(keyOf(row), { status: 'duplicate', conversionId: row.id!, conversionStatus: row.status! })
  }
  // A key with no row is a sheet disabled meanwhile.
  for (const key of keys) if (!outcomes.has(key)) outcomes.set(key, null)
  return outcomes
}

// The stored rows of keys, for the answers of those the batch statement did not write (duplicate,
// with the conversion's id and status): one probe of the key's index per key. Its plan must use
// that index whatever the table's statistics were when it was made: a plan made while the table
// was nearly empty or just after an ANALYZE of it is a sequential scan (reading every row for each
// key), and a cached one is kept until the next ANALYZE (in a bench on a fresh database: 3,900
// instead of 14,000 deliveries/s, 330 µs of PostgreSQL's CPU per delivery). Run by a session
// function (BATCH_STATEMENT's body) its plan is cached, made with sequential scans disabled
// (the function's own setting), which leaves the key's index the cheapest path in every state (a
// test makes the plan on an empty analyzed table); as a statement of its own (STORED_STATEMENT) it
// is planned at each run, for the table as it is. `= ANY` over the keys' sheets, ids and events
// (and the rows of every combination of them) was no cheaper to plan, and with the arrays of a
// whole batch (every element repeated) PostgreSQL costed the combinations, not the distinct keys,
// and read the whole sheet instead (a tenth of the throughput). `condition`: more about the row `c`.
function storedText(condition = ''): string {
  return `
    SELECT c.id::text AS id, c.sheet_id, c.transaction_id, c.event, c.status, 'duplicate' AS outcome
    FROM unnest($1::text[], $2::text[], $3::text[]) AS k(sheet_id, transaction_id, event)
    CROSS JOIN LATERAL (
      SELECT c.id, c.sheet_id, c.transaction_id, c.event, c.status FROM conversions c
      WHERE c.sheet_id = k.sheet_id AND c.transaction_id = k.transaction_id AND c.event = k.event${condition} OFFSET 0
    ) c
    WHERE EXISTS (SELECT FROM sheets s WHERE s.sheet_id = k.sheet_id AND s.active)`
}
const STORED_STATEMENT = { text: storedText() }

// The batch statement's columns, in the order of its parameters.
const COLUMNS = 'sheet_id, transaction_id, event, payout, currency, campaign_id, adset_id, ad_id, status, network_status'

// The batch's deliveries as rows `i`, numbered in the order given (`ord`).
const INPUT_ROWS = `unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])
             WITH ORDINALITY AS i(${COLUMNS}, ord)`

// The insert's answer to a stored key: the move, when the lifecycle allows it. `deliveryCurrency`:
// the currency the key's delivery carried (NULL keeps the stored one), by the key of `excluded`.
const upsert = (deliveryCurrency: string) => `
      ON CONFLICT (sheet_id, transaction_id, event) DO UPDATE SET
        status = excluded.status,
        network_status = excluded.network_status,
        payout = COALESCE(excluded.payout, c.payout),
        currency = COALESCE(${deliveryCurrency}, c.currency),
        updated_at = now()
      WHERE ${allowedMoveSql('c.status', 'excluded.status')}`

// What one batch does, as one statement. It inserts the new conversions and moves the stored ones
// whose move the lifecycle allows (ON CONFLICT DO UPDATE ... WHERE: the check runs on the newest
// committed version of the row, under its lock, so concurrent moves of one key apply one at a
// time), and names the rows whose sheet is unknown or disabled. A move replaces payout and
// currency only when the delivery carries them. Ids are cast to text: the two stores' query paths
// type bigint differently. It reads no stored row: a batch of new conversions, the common case,
// costs one insert per row, as in the floor. The app runs it as a function of the session (its
// `signature`, src/database.ts), called by a prepared statement, whose body gives the same answers
// with the insert as a statement of its own (BATCH_STATEMENT); this text runs as it is only where
// a session may not make functions. Its only lookup (the sheets, a table of few rows) reads the
// batch's active sheets once, by the sheets' primary key (the index scan of `= ANY` probes each
// distinct sheet once), and the rows join what it found. Until 2026-12-02 (morning) each row
// probed its sheet (a LATERAL with OFFSET 0); until 2026-12-02 (afternoon) this was also the
// function's insert.
const BATCH_TEXT = `
    WITH active AS MATERIALIZED (
      SELECT s.sheet_id, s.default_currency FROM sheets s WHERE s.sheet_id = ANY($1::text[]) AND s.active
    ), input AS (
      SELECT i.*, s.default_currency
      FROM ${INPUT_ROWS}
      LEFT JOIN active s ON s.sheet_id = i.sheet_id
    ), written AS (
      INSERT INTO conversions AS c (${COLUMNS})
      SELECT sheet_id, transaction_id, event, payout::numeric, COALESCE(currency, default_currency), campaign_id, adset_id, ad_id, status, network_status
      FROM input
      WHERE default_currency IS NOT NULL
      ORDER BY ord
      ${upsert(`(SELECT i.currency FROM input i
           WHERE i.sheet_id = excluded.sheet_id AND i.transaction_id = excluded.transaction_id AND i.event = excluded.event)`)}
      RETURNING c.id, c.sheet_id, c.transaction_id, c.event, c.status, c.updated_at IS NULL AS inserted
    )
    SELECT id::text AS id, sheet_id, transaction_id, event, status,
      CASE WHEN inserted THEN 'stored' ELSE 'updated' END AS outcome
    FROM written
    UNION ALL
    SELECT NULL, sheet_id, transaction_id, event, NULL, 'unknown_sheet' FROM input WHERE default_currency IS NULL`

/** The most keys of a batch whose repeats' rows its own call reads (BATCH_STATEMENT's body). */
export const IN_CALL_KEYS = 64

// The function's insert: BATCH_TEXT's, as the statement itself (no CTE around it, nothing read
// from it again), for the rows of the sheets found active by the function's first statement
// (`active_sheets`, their default currencies `currencies`, in one order).
const INSERT_TEXT = `
      INSERT INTO conversions AS c (${COLUMNS})
      SELECT i.sheet_id, i.transaction_id, i.event, i.payout::numeric, COALESCE(i.currency, currencies[array_position(active_sheets, i.sheet_id)]),
        i.campaign_id, i.adset_id, i.ad_id, i.status, i.network_status
      FROM ${INPUT_ROWS}
      WHERE i.sheet_id = ANY(active_sheets)
      ORDER BY i.ord
      ${upsert(`(SELECT u.currency FROM unnest($1::text[], $2::text[], $3::text[], $5::text[]) AS u(sheet_id, transaction_id, event, currency)
           WHERE u.sheet_id = excluded.sheet_id AND u.transaction_id = excluded.transaction_id AND u.event = excluded.event)`)}
      RETURNING c.id::text, c.sheet_id, c.transaction_id, c.event, c.status, CASE WHEN c.updated_at IS NULL THEN 'stored' ELSE 'updated' END`

// The keys of unknown or disabled sheets, from the function's arrays alone.
const UNKNOWN_TEXT = `
          SELECT NULL::text, u.sheet_id, u.transaction_id, u.event, NULL::text, 'unknown_sheet'::text
          FROM unnest($1::text[], $2::text[], $3::text[]) AS u(sheet_id, transaction_id, event)
          WHERE active_sheets IS NULL OR NOT (u.sheet_id = ANY(active_sheets))`

export const BATCH_STATEMENT = {
  name: 'postback_conversion_batch_v8',
  signature: {
    parameters: Array<string>(10).fill('text[]'),
    returns: 'id text, sheet_id text, transaction_id text, event text, status text, outcome text',
    // The function gives BATCH_TEXT's answers in two statements, and a third when needed:
    // - the batch's active sheets, read first, before the insert may wait on a row lock (as
    //   BATCH_TEXT reads them in its snapshot, taken before any wait): a key whose sheet is enabled
    //   again while the insert waits stays unknown (a test makes that race on PostgreSQL);
    // - the insert (INSERT_TEXT), the statement itself. BATCH_TEXT's CTEs around it (the input kept
    //   for the unknown sheets and the moves' currencies, the written rows kept to be read out
    //   again, the active sheets joined) cost the receiver about 10 % of its CPU a delivery on
    //   PGlite with unique ids and 8 % with a tenth updates; with half repeats this way measured
    //   3 to 4 % more (BENCHMARKS.md, fourteenth pass);
    // - when the insert answered fewer keys than the batch has: the keys of unknown or disabled
    //   sheets (UNKNOWN_TEXT, from the arrays alone), and, for batches of up to IN_CALL_KEYS keys,
    //   in the same statement, the stored rows of the keys (repeats, refused moves, keys a
    //   concurrent batch committed while this one waited for it). That statement on PostgreSQL
    //   takes a new snapshot (a volatile function's statements each do), as a separate statement
    //   after the commit would; every row of a key whose lock this transaction holds is then its
    //   newest. It cannot tell which keys the insert answered: it probes every key of an active
    //   sheet and leaves out the rows this call wrote (their version is of this transaction); an
    //   unknown key's row, if its sheet was enabled meanwhile, does not change its answer
    //   (writeDeliveries). Only for batches of up to IN_CALL_KEYS keys: a second statement from
    //   the application costs about as much as 60 probes (0.65 ms a batch through PGlite's query,
    //   24 rows half of them repeats, against 0.84 for the batch statement; on PostgreSQL about
    //   11 µs of CPU a delivery, server and PostgreSQL together, with half repeats in the bench),
    //   and the larger batches of a busy receiver go on to it (writeDeliveries), which reads only
    //   the keys left.
    // Their plans are cached, made without sequential scans (see storedText). Until 2026-11-30
    // (evening) the stored rows' read was planned at each call (EXECUTE): with half repeats, about
    // 10 µs of PostgreSQL's CPU a delivery, a third of its share (batches of 25, 6,000 of them
    // alternating with the cached plan on one connection: 41.7 against 31.8 µs a row).
    // The arrays' lookups (`= ANY`, array_position) go through the batch's distinct active sheets
    // for each row: one sheet in the common case; a batch of 500 rows over 500 sheets took 3 to
    // 6 ms longer than with BATCH_TEXT's hash join (about 20 against 16 to 19 ms on PostgreSQL, a
    // review's measurement), a case of many busy sheets and a full queue only.
    declare: 'answered bigint; active_sheets text[]; currencies text[];',
    body: `
      SELECT array_agg(s.sheet_id), array_agg(s.default_currency) INTO active_sheets, currencies
      FROM sheets s WHERE s.sheet_id = ANY($1::text[]) AND s.active;
      RETURN QUERY ${INSERT_TEXT};
      GET DIAGNOSTICS answered = ROW_COUNT;
      IF answered < cardinality($1) THEN
        IF cardinality($1) <= ${IN_CALL_KEYS} THEN
          RETURN QUERY ${UNKNOWN_TEXT} UNION ALL ${storedText(' AND c.xmin IS DISTINCT FROM pg_current_xact_id_if_assigned()::xid')};
        ELSE
          RETURN QUERY ${UNKNOWN_TEXT};
        END IF;
      END IF;`,
    settings: ['enable_seqscan = off'],
  },
  // The same answers by one statement (without the stored rows of repeats, which writeDeliveries
  // then reads by a statement of its own): run as it is where the session may not make functions.
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
