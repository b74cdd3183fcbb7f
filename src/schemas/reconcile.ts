// Schemas of the reconciliation (POST /api/v1/postback/sheets/{sheet_id}/reconcile, postback-admin
// reconcile): the report of a sheet against a network's export.
import { Type, type Static } from '@sinclair/typebox'
import { STATUSES } from '../lifecycle.ts'
import { Nullable, ref, StringEnum } from './common.ts'
import type { ConversionStatus } from '../lifecycle.ts'

const Decimal = (description: string) => Type.String({ description: `${description} (exact decimal)` })
const TIME_FILTER = '^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:?\\d{2}))?$'

export const DIFFERENCE_KINDS = ['missing_here', 'missing_there', 'status_differs', 'currency_differs', 'payout_differs'] as const
export type DifferenceKind = (typeof DIFFERENCE_KINDS)[number]

const Status = StringEnum(STATUSES)
const NullableStatus = Type.Unsafe<ConversionStatus | null>({ type: ['string', 'null'], enum: [...STATUSES, null] })

export const ReconcileQuery = Type.Object({
  from: Type.Optional(Type.String({ pattern: TIME_FILTER, description: 'Window start (ISO 8601): stored conversions received at or after it. Default: the export\'s `received_at` or `date` range, else all time' })),
  to: Type.Optional(Type.String({ pattern: TIME_FILTER, description: 'Window end (ISO 8601), exclusive' })),
  approved_status: Type.Optional(Type.String({ maxLength: 1024, description: "The network's words for approved (comma-separated), as on the receiver URL" })),
  pending_status: Type.Optional(Type.String({ maxLength: 1024, description: "The network's words for pending" })),
  rejected_status: Type.Optional(Type.String({ maxLength: 1024, description: "The network's words for rejected" })),
  limit: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000, default: 10_000, description: 'Most differences listed (all are counted in `differences`)' })),
})
export type ReconcileQuery = Static<typeof ReconcileQuery>

export const ReconcileTotal = Type.Object({
  status: Status,
  currency: Type.String(),
  here_conversions: Type.Integer({ description: 'Stored conversions in scope' }),
  here_revenue: Decimal('Their payouts'),
  there_conversions: Type.Integer({ description: "Conversions in the network's export" }),
  there_revenue: Decimal('Their payouts'),
})

export const Evidence = Type.Object({
  rejection_id: Type.String(),
  reason: Type.String({ description: 'The error code the receiver answered' }),
  parameter: Nullable(Type.String({ description: 'The parameter it named' })),
  received_at: Type.String({ format: 'date-time' }),
})

export const Difference = Type.Object(
  {
    kind: StringEnum(DIFFERENCE_KINDS),
    transaction_id: Type.String(),
    event: Nullable(Type.String({ description: 'null for the base conversion' })),
    fields: Type.Array(StringEnum(['status', 'currency', 'payout'] as const), { description: 'Every field that differs (a conversion is listed once, under the first)' }),
    here: Type.Union(
      [
        Type.Object({
          conversion_id: Type.String(),
          status: Status,
          payout: Nullable(Type.String()),
          currency: Type.String(),
          received_at: Type.String({ format: 'date-time' }),
        }),
        Type.Null(),
      ],
      { description: 'The stored conversion; null when missing here' },
    ),
    there: Type.Union(
      [
        Type.Object({
          line: Type.Integer({ description: "The export's line (for CSV, 1 is the header)" }),
          status: NullableStatus,
          network_status: Nullable(Type.String({ description: 'The status word as the export wrote it' })),
          payout: Nullable(Type.String()),
          currency: Type.String(),
        }),
        Type.Null(),
      ],
      { description: 'The export\'s line; null when missing there' },
    ),
    evidence: Nullable(Type.Array(Evidence, { description: 'For missing_here: the rejected deliveries whose query carried this transaction_id (empty: none was received); null for the other kinds' })),
    explanation: Type.String(),
  },
  { $id: 'ReconcileDifference', description: 'A conversion that differs between the sheet and the export' },
)

const reportProperties = {
  sheet_id: Type.String(),
  window: Type.Object({
    from: Nullable(Type.String({ format: 'date-time' })),
    to: Nullable(Type.String({ format: 'date-time' })),
    source: StringEnum(['parameters', 'received_at', 'date', 'all_time'] as const, { description: 'Where the window came from' }),
  }),
  lines: Type.Object({
    read: Type.Integer({ description: 'Data lines read' }),
    rejected: Type.Integer({ description: 'Lines skipped for a bad value' }),
    repeated: Type.Integer({ description: 'Lines whose key a later line repeats (the last one counts)' }),
  }),
  rejected_lines: Type.Array(
    Type.Object({ line: Type.Integer(), error: Type.String(), parameter: Nullable(Type.String()), message: Type.String() }),
    { description: 'The first 100 lines skipped, with why' },
  ),
  totals: Type.Array(ReconcileTotal, { description: 'Both sides per status and currency' }),
  counts: Type.Object(Object.fromEntries(DIFFERENCE_KINDS.map((kind) => [kind, Type.Integer()])) as Record<DifferenceKind, ReturnType<typeof Type.Integer>>, {
    description: 'Conversions that differ, by kind',
  }),
  missing_here_evidence: Type.Object({
    no_delivery_received: Type.Integer({ description: 'Conversions missing here of which no rejected delivery was received' }),
    rejected: Type.Array(Type.Object({ reason: Type.String(), parameter: Nullable(Type.String()), conversions: Type.Integer() }), {
      description: 'Conversions missing here by the reason their deliveries were rejected (one with deliveries rejected for two reasons counts under each)',
    }),
    log_since: Nullable(Type.String({ format: 'date-time', description: "The oldest entry of the sheet's rejection log (it keeps the last REJECTION_LOG_MAX_PER_SHEET); null when empty. A delivery rejected before it is no longer evidence" })),
  }),
}

/** The report without the list of differences: the CLI's last line (the list goes to --out). */
export const ReconcileReport = Type.Object(reportProperties, { $id: 'ReconcileReport', description: 'A sheet reconciled with a network export' })
export type ReconcileReport = Static<typeof ReconcileReport>
export type Difference = Static<typeof Difference>

/** The API's answer: the report and the differences, streamed. */
export const ReconcileResult = Type.Object(
  {
    ...reportProperties,
    differences: Type.Array(ref(Difference), { description: 'The differing conversions: missing here, missing there, then those that differ, at most `limit`' }),
    truncated: Type.Boolean({ description: 'Whether more differences were found than listed' }),
  },
  { $id: 'ReconcileResult', description: 'A sheet reconciled with a network export, with the differing conversions' },
)
export type ReconcileResult = Static<typeof ReconcileResult>

export const reconcileSchemas = [Difference, ReconcileReport, ReconcileResult]
