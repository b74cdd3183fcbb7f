// Turns a receiver query into a Delivery or throws an InputError naming the parameter and the
// problem. The limits (lengths, patterns) come from the DeliveryQuery schema, so the OpenAPI
// document and this check cannot disagree; the domain rules the schema cannot say (unreplaced
// macros, the ISO 4217 list, error codes a network's log can show) live here.
import type { TString } from '@sinclair/typebox'
import { CURRENCIES } from './currencies.ts'
import { InputError } from './errors.ts'
import { MalformedValue, type ParsedQuery, type QueryValue } from './query-string.ts'
import { mapStatus, MAPPING_PARAMETERS, type StatusMapping } from './lifecycle.ts'
import { DeliveryQuery, type Delivery, type DeliveryQuery as DeliveryQueryType } from './schemas/receiver.ts'

type Parameter = keyof DeliveryQueryType & string
/** Parameters about the delivery rather than the conversion: checked by the receiver, never stored. */
export const CONTROL_PARAMETERS = new Set(['token', 'test'])
const REQUIRED = new Set<string>(DeliveryQuery.required ?? [])

// Tracker macros left unreplaced, and the placeholder words some networks put in their templates.
// Braces ({x} {{x}} {{{x}}} ${x} {{ x }} {x|default}) are a macro anywhere in a value: real ids do
// not carry braces, and networks wrap macros in text ("tx-{clickid}"); a name with braces on one
// side only ("{clickid", "clickid}") is a template typo. Square brackets, percent signs and hashes,
// at any depth and also unbalanced ([x] [[[x]]] %%x%% ##x## [[x]]]), count only as the whole value,
// since '%', '#' and '[' do occur in real ids and amounts ("ABC#123", "50%off", "[2024]-x").
// A name starts with a letter or '_'; between '#' or '%' a number is a name too ("#1#", "%1%"): no
// id or amount is written so, while "[1]" is a one-item list a network may pass through.
const NAME = String.raw`[A-Za-z_][\w.:-]*`
const NUMBERED_NAME = String.raw`\w[\w.:-]*`
const MACRO = new RegExp(
  [
    String.raw`\{[^{}]*\}`,
    String.raw`^\s*(?:\$?\{+\s*${NAME}|${NAME}\s*\}+)\s*$`,
    String.raw`^\s*(?:\[+\s*${NAME}\s*\]+|%+\s*${NUMBERED_NAME}\s*%+|#+\s*${NUMBERED_NAME}\s*#+)\s*$`,
  ].join('|'),
)
const PLACEHOLDER = /^(?:REPLACE|OPTIONAL)$/i
const PLAIN = /^[\w.-]+$/
// eslint-disable-next-line no-control-regex -- control characters are exactly what it finds
const CONTROL = /[\u0000-\u001F\u007F-\u009F]/

/** What template engines print for a missing value (JavaScript, C's printf, Go, Ruby, Python). */
export const NO_VALUE_WORDS = ['null', 'undefined', '(null)', 'nil', '<nil>', 'none', 'NaN'] as const
const NO_VALUE = new Set<string>(NO_VALUE_WORDS.map((word) => word.toLowerCase()))
const NO_VALUE_MAX_LENGTH = Math.max(...NO_VALUE_WORDS.map((word) => word.length))

export function isUnreplacedMacro(value: string): boolean {
  return MACRO.test(value) || PLACEHOLDER.test(value.trim())
}

/**
 * A word for "no value" as the whole value: stored, every later one would be its duplicate.
 * `plain`: the value is known to have no space to trim (the receiver's PLAIN test).
 */
export function isNoValue(value: string, plain = false): boolean {
  const trimmed = plain ? value : value.trim()
  // Most values are longer than any of the words: no lower-cased copy for them.
  return trimmed.length <= NO_VALUE_MAX_LENGTH && NO_VALUE.has(trimmed.toLowerCase())
}

const MAPPING = new Set<string>(Object.values(MAPPING_PARAMETERS))

/** A stored parameter's checks, read from the schema once: the loop over a delivery's parameters looks up nothing. */
interface Rule {
  name: Parameter
  required: boolean
  maxLength: number | undefined
  /** Where its value goes: the status word, a status-mapping parameter, or the conversion's field. */
  role: 'status' | 'mapping' | 'field'
}
const RULES: Rule[] = (Object.keys(DeliveryQuery.properties) as Parameter[])
  .filter((name) => !CONTROL_PARAMETERS.has(name))
  .map((name) => ({
    name,
    required: REQUIRED.has(name),
    maxLength: (DeliveryQuery.properties[name] as TString).maxLength,
    role: name === 'status' ? 'status' : MAPPING.has(name) ? 'mapping' : 'field',
  }))

const TEST_VALUES: Record<string, boolean> = { 1: true, true: true, 0: false, false: false }

/** Whether a delivery is a test (`test=1`): checked like a real one, never stored. */
export function parseTestFlag(value: QueryValue | undefined): boolean {
  if (value === undefined || value === '') return false
  const flag = typeof value === 'string' ? TEST_VALUES[value.trim().toLowerCase()] : undefined
  if (flag === undefined) throw new InputError('invalid_parameter', 'test', 'test must be 1 (a test postback, not stored) or 0')
  return flag
}

export function parseDelivery(query: ParsedQuery): Delivery {
  // One pass, no copies (the receiver's hot path): the status word is mapped to its canonical status
  // and kept as sent; the mapping parameters only serve that and are not stored. Every field is there
  // from the start (undefined until given), so that storing one changes no object shape: added one by
  // one under names read from the rules, the fields took V8's slow path each (about 0.7 µs a
  // delivery of seven fields in a loop, a third of the check's time).
  const delivery: Record<keyof Delivery, string | undefined> = {
    sheet_id: undefined,
    transaction_id: undefined,
    payout: undefined,
    currency: undefined,
    campaign_id: undefined,
    adset_id: undefined,
    ad_id: undefined,
    event: undefined,
    status: undefined,
    network_status: undefined,
  }
  let mapping: StatusMapping | undefined
  let word: string | undefined
  for (const rule of RULES) {
    const value = readParameter(rule, query[rule.name])
    if (value === undefined) continue
    if (rule.role === 'field') delivery[rule.name as keyof Delivery] = value
    else if (rule.role === 'status') word = value
    else (mapping ??= {})[rule.name as keyof StatusMapping] = value
  }
  const result = delivery as unknown as Delivery
  result.status = mapStatus(word, mapping)
  if (word !== undefined) result.network_status = word
  return result
}

function readParameter(rule: Rule, input: QueryValue | undefined): string | undefined {
  const name = rule.name
  // `typeof` first: an instanceof test of a string calls into V8's runtime.
  if (typeof input !== 'string' && Array.isArray(input)) {
    throw new InputError('repeated_parameter', name, `${name} is given ${input.length} times; send it once`)
  }
  if (typeof input === 'object' && input instanceof MalformedValue) {
    if (isUnreplacedMacro(input.raw)) throw macroError(name, input.raw)
    throw new InputError('invalid_parameter', name, `${name} has an invalid percent-encoding: ${quote(input.raw)}`)
  }
  // Most values are plain (letters, digits, '.', '_', '-'): no macro but a placeholder word can be
  // written so, and they hold no space or control character.
  const plain = input !== undefined && PLAIN.test(input)
  if (input === undefined || (!plain && input.trim() === '')) {
    if (rule.required) throw new InputError('missing_parameter', name, `${name} is required`)
    return undefined
  }
  if (isNoValue(input, plain)) throw noValueError(name, input)
  // A plain value is a placeholder only as one of its words (7 or 8 letters).
  if (plain ? (input.length === 7 || input.length === 8) && PLACEHOLDER.test(input) : isUnreplacedMacro(input)) throw macroError(name, input)
  if (!plain && CONTROL.test(input)) {
    throw new InputError('invalid_parameter', name, `${name} contains control characters`)
  }
  if (rule.maxLength !== undefined && input.length > rule.maxLength) {
    throw new InputError('invalid_parameter', name, `${name} is longer than ${rule.maxLength} characters`)
  }
  if (name === 'payout') return parsePayout(input)
  if (name === 'currency') return parseCurrency(input)
  return input
}

function macroError(name: string, value: string): InputError {
  return new InputError(
    'unreplaced_macro',
    name,
    `${name} is an unreplaced tracker macro ${quote(value)}: set the network's postback URL to fill in a value`,
  )
}

function noValueError(name: string, value: string): InputError {
  const absent = REQUIRED.has(name) ? '' : ', or leave the parameter out'
  return new InputError(
    'invalid_parameter',
    name,
    `${name} is ${quote(value)}: the network's template produced no value for ${name}; set the network's postback URL to fill in a value${absent}`,
  )
}

const PAYOUT = new RegExp(DeliveryQuery.properties.payout.pattern!)
const PAYOUT_INTEGER_DIGITS = 12
// Already canonical (no sign, no leading zero, a fraction of 1 to 6 digits if any, below 10^12): as
// most networks send it, returned as it is, without the five regexes and three copies below.
const CANONICAL_PAYOUT = /^(?:0|[1-9]\d{0,11})(?:\.\d{1,6})?$/

/** Checks the payout and returns it in canonical form, keeping the fraction digits as sent. */
export function parsePayout(input: string): string {
  return CANONICAL_PAYOUT.test(input) ? input : normalizePayout(input)
}

/** parsePayout for any input: checked, then sign, leading zeros and a zero's sign taken away. */
export function normalizePayout(input: string): string {
  if (!PAYOUT.test(input)) {
    const hint = /^[+-]?\d*,\d+$/.test(input)
      ? "use '.' as the decimal separator"
      : /\.\d{7,}$/.test(input)
        ? 'at most 6 fraction digits'
        : "a decimal number such as 12.50, with '.' as separator"
    throw new InputError('invalid_parameter', 'payout', `payout ${quote(input)} is not valid: ${hint}`)
  }
  const negative = input.startsWith('-')
  const unsigned = input.replace(/^[+-]/, '')
  const [integerPart = '', fraction = ''] = unsigned.split('.')
  const integer = integerPart.replace(/^0+/, '') || '0'
  if (integer.length > PAYOUT_INTEGER_DIGITS) {
    throw new InputError('invalid_parameter', 'payout', `payout ${quote(input)} is not valid: it must be below 10^12`)
  }
  const digits = fraction === '' ? integer : `${integer}.${fraction}`
  const isZero = /^[0.]*$/.test(digits)
  return negative && !isZero ? `-${digits}` : digits
}

function parseCurrency(input: string): string {
  // As most networks send it: a code of the list, in capitals.
  if (CURRENCIES.has(input)) return input
  if (!/^[A-Za-z]{3}$/.test(input)) {
    throw new InputError('invalid_parameter', 'currency', `currency ${quote(input)} is not a 3-letter ISO 4217 code`)
  }
  const code = input.toUpperCase()
  if (!CURRENCIES.has(code)) {
    throw new InputError('unknown_currency', 'currency', `currency ${quote(input)} is not an ISO 4217 currency code`)
  }
  return code
}

function quote(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value)
}
