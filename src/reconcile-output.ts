// What `postback-admin reconcile` writes: a summary a person reads on stdout, and with --out every
// difference as a CSV file (streamed: memory does not grow with the number of differences).
import { open, type FileHandle } from 'node:fs/promises'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import { ImportFileError } from './file-lines.ts'
import type { Difference, ReconcileReport } from './schemas/reconcile.ts'

const CSV_COLUMNS = [
  'kind',
  'transaction_id',
  'event',
  'fields',
  'here_conversion_id',
  'here_status',
  'here_payout',
  'here_currency',
  'here_received_at',
  'there_line',
  'there_status',
  'there_network_status',
  'there_payout',
  'there_currency',
  'explanation',
  'evidence',
] as const

/** A CSV field: quoted when it holds a comma, a quote or a line break; formula-looking text is not special-cased. */
function field(value: string | number | null | undefined): string {
  const text = value === null || value === undefined ? '' : String(value)
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text
}

function csvLine(difference: Difference): string {
  const { here, there } = difference
  const evidence = (difference.evidence ?? []).map((entry) => `${entry.received_at} ${reasonText(entry.reason, entry.parameter)}`).join('; ')
  const values = [
    difference.kind,
    difference.transaction_id,
    difference.event,
    difference.fields.join(' '),
    here?.conversion_id,
    here?.status,
    here?.payout,
    here?.currency,
    here?.received_at,
    there?.line,
    there?.status,
    there?.network_status,
    there?.payout,
    there?.currency,
    difference.explanation,
    evidence,
  ]
  return `${values.map(field).join(',')}\n`
}

/** A refusal's reason for a person: `unreplaced_macro (payout)`. */
export const reasonText = (reason: string, parameter?: string | null) => (parameter ? `${reason} (${parameter})` : reason)

/** Opens the file the differences go to, before any work: a path that cannot be written is a clear error. */
export async function openDifferencesFile(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'w')
  } catch (error) {
    throw new ImportFileError(`cannot write ${path}: ${(error as Error).message}`)
  }
}

/** Writes the differences as CSV, with a header, to the file (which it closes). */
export async function writeDifferences(file: FileHandle, differences: AsyncIterable<Difference>): Promise<void> {
  const out = file.createWriteStream()
  let failure: unknown
  out.on('error', (error) => (failure ??= error))
  try {
    out.write(`${CSV_COLUMNS.join(',')}\n`)
    for await (const difference of differences) {
      if (failure) break
      if (!out.write(csvLine(difference))) await Promise.race([once(out, 'drain'), once(out, 'close')])
    }
  } finally {
    out.end()
    await finished(out).catch((error: unknown) => (failure ??= error))
  }
  if (failure) throw new ImportFileError(`cannot write the differences: ${(failure as Error).message}`)
}

/** The report in a few lines for a person: the window, the totals side by side, the differences and their causes. */
export function reconcileSummary(report: ReconcileReport, out: string | undefined): string {
  const lines: string[] = []
  const { window } = report
  const range = window.source === 'all_time' ? 'all time' : `${window.from ?? '…'} to ${window.to ?? '…'} (from ${window.source === 'parameters' ? '--from/--to' : `the export's ${window.source} column`})`
  lines.push(`sheet ${report.sheet_id}, window ${range}`)
  lines.push(`export: ${report.lines.read} lines, ${report.lines.rejected} skipped for a bad value, ${report.lines.repeated} repeating a later line's key`)
  lines.push('totals            here                      there')
  for (const total of report.totals) {
    lines.push(
      `  ${`${total.status} ${total.currency}`.padEnd(16)}${`${total.here_conversions} / ${total.here_revenue}`.padEnd(26)}${total.there_conversions} / ${total.there_revenue}`,
    )
  }
  const { counts } = report
  lines.push(
    `differences: ${counts.missing_here} missing here, ${counts.missing_there} missing there, ${counts.status_differs} status, ${counts.currency_differs} currency, ${counts.payout_differs} payout`,
  )
  if (counts.missing_here > 0) {
    const since = report.missing_here_evidence.log_since
    lines.push(`missing here: ${report.missing_here_evidence.no_delivery_received} never received (no rejected delivery of them in the rejection log${since ? `, kept since ${since}` : ''})`)
    for (const cause of report.missing_here_evidence.rejected) {
      lines.push(`  ${cause.conversions} rejected by the receiver: ${reasonText(cause.reason, cause.parameter)}`)
    }
  }
  if (out) lines.push(`every difference: ${out}`)
  return `${lines.join('\n')}\n`
}
