// Schemas of the management API (/api/v1/postback/...). Ids and decimals are strings, timestamps
// ISO 8601 in UTC. Schemas with an `$id` are shared components of the OpenAPI document.
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { ErrorRef, Nullable, ref, StringEnum } from './common.ts'
import { STATUSES } from '../lifecycle.ts'

const Timestamp = (description: string) => Type.String({ format: 'date-time', description })

// ISO 8601: a date (midnight UTC) or a date-time with an offset.
const TIME_FILTER = '^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,9})?)?(Z|[+-]\\d{2}:?\\d{2}))?$'

export const Conversion = Type.Object(
  {
    id: Type.String({ description: 'Conversion id (a decimal integer)' }),
    sheet_id: Type.String(),
    transaction_id: Type.String(),
    payout: Nullable(Type.String({ description: 'Exact decimal, as sent' })),
    currency: Type.String({ description: 'ISO 4217 code' }),
    campaign_id: Nullable(Type.String()),
    adset_id: Nullable(Type.String()),
    ad_id: Nullable(Type.String()),
    event: Nullable(Type.String({ description: 'The conversion type; null for the base conversion (a delivery without `event`)' })),
    status: StringEnum(STATUSES, { description: 'Only `approved` conversions count as conversions and revenue; `pending` is revenue on hold' }),
    network_status: Nullable(Type.String({ description: 'The status word as the network sent it; null when it sent none' })),
    received_at: Timestamp('When the conversion was stored'),
    updated_at: Nullable(Timestamp('When a delivery last moved its status; null if never')),
  },
  { $id: 'Conversion', description: 'A stored conversion' },
)
export type Conversion = Static<typeof Conversion>

const page = <T extends TSchema>(item: T, id: string, description: string) =>
  Type.Object(
    {
      data: Type.Array(item),
      next_cursor: Nullable(Type.String({ description: 'Pass as `cursor` for the next page; null on the last page' })),
    },
    { $id: id, description },
  )

export const ConversionPage = page(ref(Conversion), 'ConversionPage', 'A page of conversions')

const Limit = Type.Integer({ minimum: 1, maximum: 500, default: 50, description: 'Items per page' })
const Cursor = Type.String({ maxLength: 200, description: '`next_cursor` of the previous page' })
const Order = StringEnum(['desc', 'asc'], {
  default: 'desc',
  description: 'By received_at (then id): newest first (`desc`) or oldest first (`asc`)',
})

/** Filters shared by the conversion list and the summary. */
const conversionFilters = {
  sheet_id: Type.Optional(Type.String({ maxLength: 128, description: 'One sheet; default: every sheet the key may see' })),
  from: Type.Optional(Type.String({ pattern: TIME_FILTER, description: 'received_at at or after (ISO 8601)' })),
  to: Type.Optional(Type.String({ pattern: TIME_FILTER, description: 'received_at before (ISO 8601)' })),
  campaign_id: Type.Optional(Type.String({ maxLength: 255, description: 'Meta campaign id' })),
  adset_id: Type.Optional(Type.String({ maxLength: 255, description: 'Meta ad set id' })),
  ad_id: Type.Optional(Type.String({ maxLength: 255, description: 'Meta ad id' })),
  currency: Type.Optional(Type.String({ pattern: '^[A-Za-z]{3}$', description: 'ISO 4217 code' })),
  transaction_id: Type.Optional(Type.String({ maxLength: 255, description: "The network's conversion id" })),
  status: Type.Optional(StringEnum(STATUSES, { description: 'Only conversions of this status' })),
  event: Type.Optional(Type.String({ maxLength: 255, description: 'Only conversions of this event; empty (`event=`) for base conversions (sent without `event`)' })),
}

export const ConversionQuery = Type.Object(
  { ...conversionFilters, limit: Type.Optional(Limit), cursor: Type.Optional(Cursor), order: Type.Optional(Order) },
  { additionalProperties: false },
)
export type ConversionQuery = Static<typeof ConversionQuery>

export const SummaryQuery = Type.Object(
  {
    ...conversionFilters,
    group_by: StringEnum(['campaign', 'adset', 'ad', 'event'], {
      description: 'Group by campaign, ad set (with its campaign), ad (with its ad set and campaign) or event',
    }),
    interval: Type.Optional(StringEnum(['day'], { description: 'Also group by day of received_at in `tz`' })),
    tz: Type.Optional(Type.String({ maxLength: 64, default: 'UTC', description: 'IANA time zone of the day buckets', examples: ['Europe/Berlin'] })),
  },
  { additionalProperties: false },
)
export type SummaryQuery = Static<typeof SummaryQuery>

export const SummaryRow = Type.Object(
  {
    campaign_id: Type.Optional(Nullable(Type.String({ description: 'With group_by campaign, adset or ad' }))),
    adset_id: Type.Optional(Nullable(Type.String({ description: 'With group_by adset or ad' }))),
    ad_id: Type.Optional(Nullable(Type.String({ description: 'With group_by ad' }))),
    event: Type.Optional(Nullable(Type.String({ description: 'With group_by event: the event, null for base conversions' }))),
    day: Type.Optional(Type.String({ format: 'date', description: 'With interval=day: the day in `tz`' })),
    currency: Type.String(),
    conversions: Type.Integer({ description: 'Number of approved conversions: what the postback conversion column shows' }),
    revenue: Type.String({ description: 'Sum of approved payouts, exact decimal with at least two fraction digits (`12.50`, `0.00`, `0.125`); conversions without payout add nothing' }),
    pending_conversions: Type.Integer({ description: 'Number of pending conversions' }),
    pending_revenue: Type.String({ description: 'Sum of pending payouts: revenue on hold' }),
    rejected_conversions: Type.Integer({ description: 'Number of rejected conversions' }),
    rejected_revenue: Type.String({ description: 'Sum of rejected payouts' }),
  },
  { $id: 'SummaryRow', description: 'Conversions and revenue of one group in one currency, by status' },
)
export type SummaryRow = Static<typeof SummaryRow>

export const Summary = Type.Object(
  { data: Type.Array(ref(SummaryRow)) },
  { $id: 'Summary', description: 'One row per group and currency; currencies are never summed together' },
)

export const Change = Type.Object(
  {
    position: Type.String({ description: 'Where this change is in the feed: pass the last one you processed as `after` to resume after it' }),
    kind: StringEnum(['stored', 'updated'], { description: '`stored`: the conversion was stored; `updated`: a delivery moved its status' }),
    conversion: ref(Conversion),
  },
  { $id: 'Change', description: 'A change of a conversion, with the conversion as that change left it' },
)
export type Change = Static<typeof Change>

export const ChangePage = Type.Object(
  {
    data: Type.Array(ref(Change)),
    next: Type.String({ description: 'Pass as `after` for the next page; always set, also on an empty page' }),
  },
  { $id: 'ChangePage', description: 'Changes in feed order' },
)
export type ChangePage = Static<typeof ChangePage>

export const ChangeQuery = Type.Object(
  {
    sheet_id: conversionFilters.sheet_id,
    after: Type.Optional(Type.String({ maxLength: 64, description: '`next` of the previous page (or the `position` of the last change processed); absent: from the beginning' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'Changes per page' })),
    wait: Type.Optional(Type.Integer({ minimum: 0, maximum: 30, default: 0, description: 'Long poll: when no change is ready, hold the request up to this many seconds until one is' })),
  },
  { additionalProperties: false },
)
export type ChangeQuery = Static<typeof ChangeQuery>

export const Rejection = Type.Object(
  {
    id: Type.String(),
    sheet_id: Type.String(),
    reason: Type.String({ description: 'The error code the delivery got, e.g. `unreplaced_macro`' }),
    parameter: Nullable(Type.String()),
    raw_query: Type.String({ description: 'The query string as sent (at most 2048 characters), with the values of `token` and other secret-looking parameters replaced by [REDACTED]' }),
    remote_address: Nullable(Type.String({ description: 'The client address (behind TRUST_PROXY: the forwarded one)' })),
    test: Type.Boolean({ description: 'A test postback (`test=1`)' }),
    received_at: Timestamp('When the delivery was rejected'),
  },
  { $id: 'Rejection', description: 'A rejected delivery of a known sheet' },
)
export type Rejection = Static<typeof Rejection>

export const RejectionPage = page(ref(Rejection), 'RejectionPage', 'A page of rejected deliveries, newest first')
export type RejectionPage = Static<typeof RejectionPage>

export const RejectionQuery = Type.Object(
  {
    sheet_id: conversionFilters.sheet_id,
    from: conversionFilters.from,
    to: conversionFilters.to,
    limit: Type.Optional(Limit),
    cursor: Type.Optional(Cursor),
  },
  { additionalProperties: false },
)
export type RejectionQuery = Static<typeof RejectionQuery>

export const SheetParams = Type.Object({ sheet_id: Type.String({ maxLength: 128, description: 'The sheet' }) })

export const SheetStatus = Type.Object(
  {
    sheet_id: Type.String(),
    active: Type.Boolean(),
    last_received_at: Nullable(Timestamp('When the newest conversion was stored')),
    last_rejected_at: Nullable(Timestamp('When the newest rejected delivery came')),
    last_24h: Type.Object(
      {
        stored: Type.Integer(),
        updated: Type.Integer({ description: 'Deliveries that moved a conversion to another status' }),
        duplicate: Type.Integer(),
        rejected: Type.Integer(),
      },
      { description: 'Deliveries in the last 24 hours, by outcome' },
    ),
    top_rejection_reasons: Type.Array(Type.Object({ reason: Type.String(), count: Type.Integer() }), {
      description: 'The most frequent rejection reasons of the last 24 hours',
    }),
    last_test: Nullable(
      Type.Object(
        {
          received_at: Timestamp('When the newest test postback came'),
          outcome: Type.String({ description: '`ok`, or the error code it got (`invalid_token`, `unreplaced_macro`, ...)' }),
        },
        { description: 'The newest test postback (`test=1`); null if none came' },
      ),
    ),
  },
  { $id: 'SheetStatus', description: 'Is the network delivering? The receiver side of one sheet' },
)
export type SheetStatus = Static<typeof SheetStatus>

export const HistoryEntry = Type.Object(
  {
    status: StringEnum(STATUSES),
    network_status: Nullable(Type.String({ description: 'The status word as the network sent it' })),
    payout: Nullable(Type.String({ description: 'Exact decimal, as it stood after this delivery' })),
    currency: Type.String(),
    recorded_at: Timestamp('When the delivery was stored or applied'),
  },
  { $id: 'HistoryEntry', description: 'A stored or applied delivery of a conversion' },
)
export type HistoryEntry = Static<typeof HistoryEntry>

export const ConversionHistory = Type.Object(
  { data: Type.Array(ref(HistoryEntry)) },
  { $id: 'ConversionHistory', description: 'The deliveries that stored or moved a conversion, oldest first' },
)

export const TRACKERS = ['keitaro', 'voluum', 'redtrack', 'binom', 'generic'] as const

export const ReceiverUrlQuery = Type.Object(
  {
    tracker: StringEnum(TRACKERS, { description: 'Whose macro syntax to fill in' }),
    token: Type.Optional(
      Type.String({ minLength: 1, maxLength: 200, description: "The sheet's secret, to put in the URL; without it a sheet with a secret gets `token=YOUR_SHEET_TOKEN`" }),
    ),
  },
  { additionalProperties: false },
)

export const ReceiverUrl = Type.Object(
  {
    tracker: Type.String(),
    url: Type.String({ description: "Paste into the network's postback URL field" }),
    parameters: Type.Record(Type.String(), Type.String(), { description: 'Each receiver parameter and the macro (or the secret) it is given' }),
    note: Type.String(),
  },
  { $id: 'ReceiverUrl', description: 'A receiver URL with one tracker’s macros' },
)

export const Sheet = Type.Object(
  {
    sheet_id: Type.String(),
    name: Type.String(),
    default_currency: Type.String(),
    active: Type.Boolean(),
    created_at: Timestamp('When the sheet was created'),
    has_token: Type.Boolean({ description: 'Whether deliveries must carry the sheet’s secret as `token`' }),
    previous_token_expires_at: Nullable(Timestamp('Until when the secret before the last rotation is still accepted')),
    allowed_addresses: Type.Array(Type.String(), { description: 'Addresses and CIDRs deliveries may come from; empty: any' }),
  },
  { $id: 'Sheet', description: 'An account that networks deliver conversions to' },
)
export type Sheet = Static<typeof Sheet>

export const SheetToken = Type.Object(
  {
    sheet_id: Type.String(),
    token: Type.String({ description: 'The sheet’s new secret: shown once, stored hashed. Deliveries carry it as `token=`' }),
  },
  { $id: 'SheetToken', description: 'A new sheet secret' },
)
export type SheetToken = Static<typeof SheetToken>

export const RotateTokenBody = Type.Object(
  {
    grace_seconds: Type.Optional(
      Type.Integer({ minimum: 0, maximum: 90 * 86_400, default: 86_400, description: 'How long the previous secret stays valid' }),
    ),
  },
  { additionalProperties: false },
)

export const AllowListBody = Type.Object(
  {
    addresses: Type.Array(Type.String({ minLength: 1, maxLength: 64 }), {
      minItems: 1,
      maxItems: 1000,
      description: 'IPv4 or IPv6 addresses and CIDRs (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`)',
    }),
  },
  { additionalProperties: false },
)

export const CreateSheetBody = Type.Object(
  {
    sheet_id: Type.String({ minLength: 1, maxLength: 128, description: 'Letters, digits and _ . : -' }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    currency: Type.Optional(Type.String({ pattern: '^[A-Za-z]{3}$', description: 'Default currency (ISO 4217), default USD' })),
  },
  { additionalProperties: false },
)
export type CreateSheetBody = Static<typeof CreateSheetBody>

export const KEY_ROLES = ['read', 'admin'] as const
const KeyRole = StringEnum(KEY_ROLES, {
  description:
    '`read`: conversions, summary, history and diagnostics; `admin`: also the routes under /admin (a sheet-scoped admin key: ' +
    'its sheets’ disable, token and allow-list routes)',
})

export const ApiKey = Type.Object(
  {
    id: Type.String({ description: 'Public id of the key, for revoking it' }),
    name: Type.String(),
    global: Type.Boolean({ description: 'Sees every sheet' }),
    sheet_ids: Type.Array(Type.String(), { description: 'The sheets a non-global key may see' }),
    role: KeyRole,
    created_at: Timestamp('When the key was created'),
    revoked_at: Nullable(Timestamp('When the key was revoked')),
  },
  { $id: 'ApiKey', description: 'An API key (without the key itself)' },
)
export type ApiKey = Static<typeof ApiKey>

export const CreatedApiKey = Type.Composite(
  [ApiKey, Type.Object({ key: Type.String({ description: 'The key: shown once, not stored' }) })],
  { $id: 'CreatedApiKey', description: 'A new API key, with the key itself' },
)
export type CreatedApiKey = Static<typeof CreatedApiKey>

export const CreateKeyBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    global: Type.Optional(Type.Boolean({ description: 'A global key; give this or sheet_ids' })),
    sheet_ids: Type.Optional(Type.Array(Type.String({ maxLength: 128 }), { minItems: 1, maxItems: 1000, description: 'Sheets the key may see' })),
    role: Type.Optional(StringEnum(KEY_ROLES, { description: 'Default: `admin` for a global key, `read` for a sheet-scoped one' })),
  },
  { additionalProperties: false },
)
export type CreateKeyBody = Static<typeof CreateKeyBody>

export const KeyParams = Type.Object({ key_id: Type.String({ maxLength: 64, description: 'The key id' }) })
export const ConversionParams = Type.Object({ id: Type.String({ pattern: '^[0-9]{1,19}$', description: 'Conversion id' }) })

/** OpenAPI security requirement of every management route. */
const bearerSecurity = [{ bearerAuth: [] }]

/** Responses every management route can send besides its own. */
const authResponses = {
  400: ErrorRef,
  401: ErrorRef,
  403: ErrorRef,
  429: ErrorRef,
  503: ErrorRef,
}

/** What a management route says about itself; the bearer security and the shared error answers are added. */
interface ManagementRouteSchema {
  tag: 'conversions' | 'diagnostics' | 'admin'
  operationId: string
  summary: string
  description?: string
  querystring?: TSchema
  params?: TSchema
  /** A JSON body, or (for a streamed body) its content types, documented and not validated. */
  body?: TSchema | { content: Record<string, { schema: Record<string, unknown> }> }
  response: Record<number, TSchema>
}

/** The schema of a management route: its own parts, plus what every management route shares. */
export function managementRoute<const S extends ManagementRouteSchema>({ tag, response, ...own }: S) {
  // Typed by hand: a spread of the generic `response` would lose the route's own codes to the type provider.
  const merged = { ...authResponses, ...response } as typeof authResponses & S['response']
  return { ...own, tags: [tag], security: bearerSecurity, response: merged }
}

export const managementSchemas = [Conversion, ConversionPage, Change, ChangePage, HistoryEntry, ConversionHistory, SummaryRow, Summary, Rejection, RejectionPage, SheetStatus, ReceiverUrl, Sheet, SheetToken, ApiKey, CreatedApiKey]
