// Statements prepared once in PGlite's session and then run by one protocol call each. PGlite's
// `query` parses, describes and plans every statement it runs, in six protocol exchanges (parse,
// describe the statement, bind, describe the portal, execute, sync), each a call into PostgreSQL;
// PGlite has no prepared statements of its own. Here a statement is parsed and described once
// (Parse of a named statement, as `pg` prepares one on PostgreSQL), and each run is one call with
// Bind, Execute and Sync: the receiver's batch statement of 25 new conversions took 1.67 instead of
// 2.12 ms (BENCHMARKS.md, thirteenth pass). Its values are written and its rows read as `query`
// writes and reads them (PGlite's serializers and parsers by the types PostgreSQL describes).
// A module of its own, without the app's drivers: the bench's floor (bench/floor.ts) runs its
// statement the same way.
import { parse, protocol, type PGlite } from '@electric-sql/pglite'

type RowDescription = Extract<Parameters<typeof parse.parseResults>[0][number], { name: 'rowDescription' }>

/** A statement's parameter types and result columns, as PostgreSQL described them when it was prepared. */
interface Prepared {
  parameterTypes: number[]
  /** Absent for a statement that returns no rows. */
  rows?: RowDescription
}

/**
 * What PGlite keeps to itself and `query` uses: its two locks (a transaction's and a statement's)
 * and its serializers and parsers by type.
 */
interface PGliteInternals {
  _runExclusiveTransaction<T>(fn: () => Promise<T>): Promise<T>
  _runExclusiveQuery<T>(fn: () => Promise<T>): Promise<T>
  _checkReady(): Promise<void>
  serializers: Record<number, (value: unknown) => string>
  parsers: Record<number, (text: string, typeId: number) => unknown>
}

// SQLSTATE of a Bind naming a statement the session does not have (after DEALLOCATE ALL).
const UNKNOWN_STATEMENT = '26000'

const { serialize } = protocol

function joined(messages: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(messages.reduce((length, message) => length + message.length, 0))
  let offset = 0
  for (const message of messages) {
    bytes.set(message, offset)
    offset += message.length
  }
  return bytes
}

/** The named statements of one PGlite session. */
export class PreparedStatements {
  readonly #pglite: PGlite & PGliteInternals
  readonly #prepared = new Map<string, { text: string; prepared: Promise<Prepared> }>()

  constructor(pglite: PGlite) {
    this.#pglite = pglite as PGlite & PGliteInternals
  }

  /**
   * Runs `text` as the session's statement `name` (prepared at its first run, and again if the
   * session lost it) with `values`, and returns its rows as `query` would. Like `query`, it waits
   * for a transaction open on the session (Prisma's) to end: it never runs inside one.
   */
  async query<Row>(name: string, text: string, values: unknown[]): Promise<Row[]> {
    await this.#pglite._checkReady()
    const entry = this.#entry(name, text)
    try {
      return await this.#run<Row>(entry.prepared, name, values)
    } catch (error) {
      if ((error as { code?: unknown }).code !== UNKNOWN_STATEMENT) throw error
      // Prepared again, unless another call already did.
      if (this.#prepared.get(name) === entry) this.#prepared.delete(name)
      return await this.#run<Row>(this.#entry(name, text).prepared, name, values)
    }
  }

  #entry(name: string, text: string): { text: string; prepared: Promise<Prepared> } {
    let entry = this.#prepared.get(name)
    if (entry && entry.text !== text) throw new Error(`prepared statement ${name} is already another statement`)
    if (!entry) {
      const prepared = this.#exclusive(() => this.#prepare(name, text))
      const made = (entry = { text, prepared })
      this.#prepared.set(name, made)
      prepared.catch(() => {
        if (this.#prepared.get(name) === made) this.#prepared.delete(name)
      })
    }
    return entry
  }

  async #run<Row>(preparing: Promise<Prepared>, name: string, values: unknown[]): Promise<Row[]> {
    const { parameterTypes, rows } = await preparing
    const pglite = this.#pglite
    const written = values.map((value, index) => {
      if (value === null || value === undefined) return null
      const serializer = pglite.serializers[parameterTypes[index]!]
      return serializer ? serializer(value) : String(value)
    })
    const { messages } = await this.#exclusive(() =>
      pglite.execProtocol(joined([serialize.bind({ statement: name, values: written }), serialize.execute({}), serialize.sync()]), {}),
    )
    if (!rows) return []
    return parse.parseResults([rows, ...messages], pglite.parsers)[0]!.rows as Row[]
  }

  async #prepare(name: string, text: string): Promise<Prepared> {
    // Closed first (closing a statement the session does not have is no error), so that preparing
    // again after a failure that left the statement in the session cannot fail on its name.
    const { messages } = await this.#pglite.execProtocol(
      joined([serialize.close({ type: 'S', name }), serialize.parse({ name, text }), serialize.describe({ type: 'S', name }), serialize.sync()]),
      {},
    )
    let parameterTypes: number[] = []
    let rows: RowDescription | undefined
    for (const message of messages) {
      if (message.name === 'parameterDescription') parameterTypes = (message as unknown as { dataTypeIDs: number[] }).dataTypeIDs
      else if (message.name === 'rowDescription') rows = message as RowDescription
    }
    return { parameterTypes, rows }
  }

  // Both of PGlite's locks, in `query`'s order: no transaction open, no other statement running;
  // the store asked again once they are held, as its close takes them too.
  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#pglite._runExclusiveTransaction(() =>
      this.#pglite._runExclusiveQuery(async () => {
        await this.#pglite._checkReady()
        return await fn()
      }),
    )
  }
}
