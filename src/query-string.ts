// The app's query-string parser. Unlike the default one it does not pass a malformed
// percent-encoding through as if it were the literal text: such a value becomes a MalformedValue,
// so that validation can say "invalid percent-encoding" instead of storing a mangled id.

/** A value whose percent-encoding could not be decoded; `raw` is the text as sent. */
export class MalformedValue {
  constructor(readonly raw: string) {}
  toString(): string {
    return this.raw
  }
}

export type QueryValue = string | MalformedValue | Array<string | MalformedValue>
export type ParsedQuery = Record<string, QueryValue>

function decode(text: string): string | MalformedValue {
  const spaced = text.includes('+') ? text.replaceAll('+', ' ') : text
  if (!spaced.includes('%')) return spaced
  try {
    return decodeURIComponent(spaced)
  } catch {
    return new MalformedValue(text)
  }
}

export function parseQueryString(query: string): ParsedQuery {
  // A prototype-less object: a parameter named __proto__ is just a parameter.
  const result: ParsedQuery = Object.create(null)
  if (query === '') return result
  for (const pair of query.split('&')) {
    if (pair === '') continue
    const eq = pair.indexOf('=')
    const key = decode(eq === -1 ? pair : pair.slice(0, eq))
    if (key instanceof MalformedValue) continue
    const value = decode(eq === -1 ? '' : pair.slice(eq + 1))
    const existing = result[key]
    if (existing === undefined) result[key] = value
    else if (Array.isArray(existing)) existing.push(value)
    else result[key] = [existing, value]
  }
  return result
}
