// The public receiver's request and response schemas.
import { Type, type Static } from '@sinclair/typebox'
import { ErrorRef } from './common.ts'

const Identifier = (maxLength: number, description: string) =>
  Type.String({ minLength: 1, maxLength, description })

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
  },
  { additionalProperties: true },
)
export type Delivery = Static<typeof DeliveryQuery>

export const DeliveryAccepted = Type.Object(
  {
    status: Type.Union([Type.Literal('stored'), Type.Literal('duplicate')], {
      description: '`stored` for a first delivery, `duplicate` for a repeat (nothing changed)',
    }),
    conversion_id: Type.String({ description: 'Id of the stored conversion (a decimal integer)' }),
  },
  { description: 'The conversion is committed' },
)
export type DeliveryAccepted = Static<typeof DeliveryAccepted>

export const receiverRouteSchema = {
  summary: 'Receive a conversion postback',
  description:
    'Called by affiliate networks and trackers. Stores the conversion once per (sheet_id, transaction_id); ' +
    'repeats are acknowledged as duplicates. Safe to retry.',
  tags: ['receiver'],
  operationId: 'receivePostback',
  // Public: declares no security requirement.
  security: [],
  querystring: DeliveryQuery,
  response: {
    200: DeliveryAccepted,
    400: ErrorRef,
    404: ErrorRef,
    429: ErrorRef,
    503: ErrorRef,
  },
}
