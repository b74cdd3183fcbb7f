// The conversion lifecycle, in one place: the canonical statuses, the network words that map to
// them (built in, or given per postback URL with `*_status` parameters as in Keitaro), and the moves
// a stored conversion may make. The receiver, the writer's statement and the import all use these.
import { InputError } from './errors.ts'

export const STATUSES = ['approved', 'pending', 'rejected'] as const
export type ConversionStatus = (typeof STATUSES)[number]

/** The parameters a postback URL maps its network's own status words with (comma-separated). */
export const MAPPING_PARAMETERS = {
  approved: 'approved_status',
  pending: 'pending_status',
  rejected: 'rejected_status',
} as const satisfies Record<ConversionStatus, string>

export type StatusMapping = Partial<Record<(typeof MAPPING_PARAMETERS)[ConversionStatus], string>>

/** Built-in network words, matched case-insensitively. */
export const STATUS_WORDS: Record<ConversionStatus, readonly string[]> = {
  approved: ['approved', 'approve', 'sale', 'confirmed', 'paid', 'accepted'],
  pending: ['pending', 'lead', 'hold', 'on_hold'],
  rejected: ['rejected', 'declined', 'denied', 'canceled', 'cancelled', 'chargeback', 'reversed', 'refunded', 'returned', 'fraud', 'invalid', 'trash'],
}

const BUILT_IN = new Map<string, ConversionStatus>(
  STATUSES.flatMap((status) => STATUS_WORDS[status].map((word) => [word, status] as const)),
)

/**
 * The moves a stored conversion may make, as in Keitaro: pending to approved or rejected, approved to
 * rejected (a reversal or chargeback). Rejected is final, and nothing moves back to pending, so a late
 * or retried earlier postback changes nothing.
 */
export const ALLOWED_MOVES: ReadonlyArray<readonly [from: ConversionStatus, to: ConversionStatus]> = [
  ['pending', 'approved'],
  ['pending', 'rejected'],
  ['approved', 'rejected'],
]

export function isAllowedMove(from: ConversionStatus, to: ConversionStatus): boolean {
  return ALLOWED_MOVES.some(([a, b]) => a === from && b === to)
}

/** The allowed moves as an SQL condition on two status expressions (constants only: no parameters). */
export function allowedMoveSql(from: string, to: string): string {
  return `(${from}, ${to}) IN (${ALLOWED_MOVES.map(([a, b]) => `('${a}', '${b}')`).join(', ')})`
}

const words = (list: string) =>
  list
    .split(',')
    .map((word) => word.trim().toLowerCase())
    .filter(Boolean)

/**
 * The canonical status of a network's status word: the URL's own mapping first, then the built-in
 * words. An absent word is `approved` (every delivery counts). Throws an InputError naming `status`
 * (or the mapping parameter that is contradictory).
 */
export function mapStatus(word: string | undefined, mapping: StatusMapping = {}): ConversionStatus {
  if (word === undefined) return 'approved'
  const wanted = word.trim().toLowerCase()
  let mapped: ConversionStatus | undefined
  for (const status of STATUSES) {
    const parameter = MAPPING_PARAMETERS[status]
    const list = mapping[parameter]
    if (list === undefined || !words(list).includes(wanted)) continue
    if (mapped !== undefined) {
      throw new InputError(
        'invalid_parameter',
        parameter,
        `${parameter} maps "${wanted}" to ${status}, but ${MAPPING_PARAMETERS[mapped]} maps it to ${mapped}; give each word to one status`,
      )
    }
    mapped = status
  }
  const status = mapped ?? BUILT_IN.get(wanted)
  if (status !== undefined) return status
  const own = STATUSES.filter((s) => mapping[MAPPING_PARAMETERS[s]] !== undefined)
    .map((s) => `${s}: ${words(mapping[MAPPING_PARAMETERS[s]]!).join(', ')}`)
    .join('; ')
  throw new InputError(
    'invalid_parameter',
    'status',
    `status ${JSON.stringify(word.length > 64 ? `${word.slice(0, 64)}…` : word)} is not a known status word. Accepted: ` +
      STATUSES.map((s) => `${s}: ${STATUS_WORDS[s].join(', ')}`).join('; ') +
      (own ? `; this URL's own: ${own}` : '') +
      `. Map your network's words with ${Object.values(MAPPING_PARAMETERS).join(', ')} (comma-separated), e.g. approved_status=1&pending_status=2&rejected_status=3`,
  )
}
