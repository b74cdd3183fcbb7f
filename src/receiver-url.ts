// Receiver URLs with a tracker's macros filled in, ready to paste into a network's postback field.
// The Meta ids reach the tracker through the ad's URL parameters (Meta's {{campaign.id}},
// {{adset.id}}, {{ad.id}}) into the tracker's sub-id slots 1 to 3; the note says so. `status` carries the
// conversion's status word (src/lifecycle.ts maps it); `event` the conversion type where the tracker has a macro for it.
import type { TRACKERS } from './schemas/management.ts'

type Tracker = (typeof TRACKERS)[number]

const MACROS: Record<Tracker, Record<string, string>> = {
  keitaro: { transaction_id: '{subid}', payout: '{revenue}', currency: '{currency}', status: '{status}', campaign_id: '{sub_id_1}', adset_id: '{sub_id_2}', ad_id: '{sub_id_3}' },
  voluum: { transaction_id: '{externalid}', payout: '{payout}', currency: '{currency}', status: '{status}', campaign_id: '{var1}', adset_id: '{var2}', ad_id: '{var3}' },
  redtrack: { transaction_id: '{clickid}', payout: '{sum}', currency: '{currency}', status: '{status}', event: '{type}', campaign_id: '{sub1}', adset_id: '{sub2}', ad_id: '{sub3}' },
  binom: { transaction_id: '{clickid}', payout: '{payout}', currency: '{currency}', status: '{status}', campaign_id: '{t1}', adset_id: '{t2}', ad_id: '{t3}' },
  generic: { transaction_id: '{transaction_id}', payout: '{payout}', currency: '{currency}', status: '{status}', event: '{event}', campaign_id: '{campaign_id}', adset_id: '{adset_id}', ad_id: '{ad_id}' },
}

/** Where the secret goes in a URL built without it. */
export const TOKEN_PLACEHOLDER = 'YOUR_SHEET_TOKEN'

/**
 * `token`: the sheet's secret to put in the URL; null when the sheet has none (and none was given),
 * undefined for a sheet with a secret that the caller did not give (the URL shows where it goes).
 */
export function receiverUrl(baseUrl: string, sheetId: string, tracker: Tracker, token?: string | null) {
  const parameters: Record<string, string> = token === null ? MACROS[tracker] : { ...MACROS[tracker], token: token ?? TOKEN_PLACEHOLDER }
  // Macros stay literal (not percent-encoded): the tracker must find them to replace them.
  const query = [
    `sheet_id=${encodeURIComponent(sheetId)}`,
    ...Object.entries(parameters).map(([name, macro]) => `${name}=${name === 'token' && macro !== TOKEN_PLACEHOLDER ? encodeURIComponent(macro) : macro}`),
  ]
  const tokenNote = parameters.token === TOKEN_PLACEHOLDER ? ` Replace ${TOKEN_PLACEHOLDER} with the sheet's secret (shown when it was created or rotated; postback-admin sheet token rotates it).` : ''
  return {
    tracker,
    url: `${baseUrl.replace(/\/+$/, '')}/meta/postback/conversion?${query.join('&')}`,
    parameters,
    note:
      (tracker === 'generic'
        ? "Replace each {name} with your system's value for it; leave out the parameters you do not have."
        : `Pass Meta's {{campaign.id}}, {{adset.id}} and {{ad.id}} into the tracker's sub-id slots 1, 2 and 3 in your ad URLs, or change those three macros to the slots you use. ` +
          'If your network names statuses with its own words (1, 2, 3, ...), add approved_status=, pending_status= and rejected_status= with those words.') +
      tokenNote,
  }
}
