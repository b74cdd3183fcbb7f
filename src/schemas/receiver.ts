// The public receiver's request and response schemas.
import { Type, type Static } from '@sinclair/typebox'
import { ErrorRef, StringEnum } from './common.ts'
import { MAPPING_PARAMETERS, STATUS_WORDS, STATUSES, type ConversionStatus } from '../lifecycle.ts'

const Identifier = (maxLength: number, description: string) =>
  Type.String({ minLength: 1, maxLength, description })

const MappingWords = (status: ConversionStatus) =>
  Type.String({ minLength: 1, maxLength: 255, description: `Comma-separated status words of your network that mean ${status}, as in Keitaro's ${status}_status` })

export const DeliveryQuery = Type.Object(
  {
    sheet_id: Identifier(128, 'The account the conversion belongs to'),
    transaction_id: Identifier(255, "The network's conversion id; with sheet_id, the idempotency key"),
    payout: Type.Optional(
      Type.String({
        pattern: '^[+-]?(\\d+(\\.\\d{0,6})?|\\.\\d{1,6})$',
        description: 'Conversion revenue: a decimal with `.` as separator, at most 6 fraction digits, below 10^12',
        examples: ['12.50'],
      }),
    ),
    currency: Type.Optional(
      Type.String({
        pattern: '^[A-Za-z]{3}$',
        description: "ISO 4217 code, any case (stored upper-case); default: the sheet's currency",
        examples: ['USD'],
      }),
    ),
    campaign_id: Type.Optional(Identifier(255, 'Meta campaign id')),
    adset_id: Type.Optional(Identifier(255, 'Meta ad set id')),
    ad_id: Type.Optional(Identifier(255, 'Meta ad id')),
    event: Type.Optional(
      Identifier(255, 'The conversion type (`lead`, `purchase`, `deposit`, ...); with sheet_id and transaction_id, the idempotency key. Absent: the base conversion'),
    ),
    status: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 64,
        description:
          "The network's status word, case-insensitive: " +
          STATUSES.map((status) => `${status} (${STATUS_WORDS[status].map((word) => `\`${word}\``).join(', ')})`).join(', ') +
          ', or a word of the mapping parameters. Absent: approved',
        examples: ['sale'],
      }),
    ),
    approved_status: Type.Optional(MappingWords('approved')),
    pending_status: Type.Optional(MappingWords('pending')),
    rejected_status: Type.Optional(MappingWords('rejected')),
    token: Type.Optional(
      Type.String({ description: "The sheet's secret, when it has one (`postback-admin sheet token`); required then" }),
    ),
    test: Type.Optional(
      StringEnum(['1', '0', 'true', 'false'], { description: '`1` or `true` (any case): a test postback: every check of a real delivery, nothing stored or counted; `0` or `false`: a real one' }),
    ),
  },
  { additionalProperties: true },
)
export type DeliveryQuery = Static<typeof DeliveryQuery>

/** A checked delivery, as the writer takes it: the status mapped to its canonical word (absent: approved). */
export type Delivery = Omit<DeliveryQuery, 'status' | 'token' | 'test' | (typeof MAPPING_PARAMETERS)[ConversionStatus]> & {
  status?: ConversionStatus
  /** The status word as the network sent it. */
  network_status?: string
}

export const ConversionStatusSchema = StringEnum(STATUSES, { description: 'The conversion status: only `approved` conversions count as conversions and revenue' })

export const DeliveryAccepted = Type.Object(
  {
    status: StringEnum(['stored', 'updated', 'duplicate'], {
      description:
        '`stored` for a first delivery, `updated` when it moved the conversion to another status, `duplicate` when it changed nothing ' +
        '(a repeat, or a move the lifecycle does not allow: rejected is final, nothing moves back to pending)',
    }),
    conversion_id: Type.String({ description: 'Id of the stored conversion (a decimal integer)' }),
    conversion_status: ConversionStatusSchema,
  },
  { description: 'The conversion is committed' },
)
export type DeliveryAccepted = Static<typeof DeliveryAccepted>

export const DeliveryTested = Type.Object(
  {
    status: Type.Literal('test', { description: 'A test postback (`test=1`) that passed every check; nothing was stored or counted' }),
    conversion_status: ConversionStatusSchema,
  },
  { description: 'The status a real delivery with these parameters would get' },
)
export type DeliveryTested = Static<typeof DeliveryTested>

export const receiverRouteSchema = {
  summary: 'Receive a conversion postback',
  description:
    'Called by affiliate networks and trackers. Stores the conversion once per (sheet_id, transaction_id, event); ' +
    'a later delivery with another status moves it along its lifecycle (pending to approved or rejected, approved to rejected); ' +
    'repeats are acknowledged as duplicates. Safe to retry. A sheet with a secret needs it as `token`; a sheet with an ' +
    'address allow-list refuses other addresses (403). `test=1` runs every check and stores nothing.',
  tags: ['receiver'],
  operationId: 'receivePostback',
  // Public: declares no security requirement.
  security: [],
  querystring: DeliveryQuery,
  response: {
    200: Type.Union([DeliveryAccepted, DeliveryTested]),
    400: ErrorRef,
    403: ErrorRef,
    404: ErrorRef,
    429: ErrorRef,
    503: ErrorRef,
  },
}
