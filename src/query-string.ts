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

// The parsed query's prototype: an object without one, so that nothing is inherited (no __proto__
// accessor: a parameter named __proto__ is just a parameter, and `toString` is not one). An
// instance keeps V8's fast properties, which an object made by Object.create(null) does not have
// (a hash table from the start): parsing and reading the receiver's parameters took a third longer.
function Parameters() {}
Parameters.prototype = Object.create(null)

export function parseQueryString(query: string): ParsedQuery {
  const result = new (Parameters as unknown as new () => ParsedQuery)()
  // Pair by pair with indexOf: query.split('&') went to V8's runtime (about 0.5 µs a request for
  // the receiver's query). The next '=' is looked for again only once the pairs have passed it, so
  // that pairs without one cost no more than a scan of the query in all.
  let eq = query.indexOf('=')
  let start = 0
  while (start <= query.length) {
    let end = query.indexOf('&', start)
    if (end === -1) end = query.length
    if (end > start) {
      if (eq !== -1 && eq < start) eq = query.indexOf('=', start)
      const split = eq !== -1 && eq < end
      const key = decode(query.slice(start, split ? eq : end))
      // A name that cannot be decoded is left out (`typeof`: an instanceof test of a string calls
      // into V8's runtime, about 0.2 µs a request for the receiver's nine parameters).
      if (typeof key === 'string') {
        const value = decode(split ? query.slice(eq + 1, end) : '')
        const existing = result[key]
        if (existing === undefined) result[key] = value
        else if (Array.isArray(existing)) existing.push(value)
        else result[key] = [existing, value]
      }
    }
    start = end + 1
  }
  return result
}
