// Opens the store the config names: PostgreSQL through @prisma/adapter-pg when DATABASE_URL is set,
// otherwise the embedded PGlite in DATA_DIR (locked against a second process). Both give one
// PrismaClient plus a plain SQL session for the migration runner.
import { mkdirSync } from 'node:fs'
import pg from 'pg'
import { PGlite } from '@electric-sql/pglite'
import { PrismaPg } from '@prisma/adapter-pg'
import { PrismaPGlite } from 'pglite-prisma-adapter'
import type { Config } from './config.ts'
import { lockDataDir } from './data-dir-lock.ts'
import { PrismaClient } from './generated/prisma/client.ts'
import { StoreClient, StorePool, typed } from './pg-pool.ts'
import { functionCall, functionDefinition } from './session-function.ts'
import { PreparedStatements } from './pglite-prepared.ts'
import { StoreUnavailableError } from './storage-errors.ts'

export type { PrismaClient }

/** A plain connection for scripts (migrations): multi-statement SQL and parameterised queries. */
export interface SqlSession {
  query<Row = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<Row[]>
  exec(sql: string): Promise<void>
}

/**
 * A statement of the hot path: positional parameters ($1, $2, ...) and, for a prepared statement on
 * PostgreSQL (parsed once per connection, its plan possibly cached), a name unique to its text.
 */
export interface Statement {
  name?: string
  text: string
  values: unknown[]
  /**
   * The parameters' types and the result's columns of a named statement, with which it runs as a
   * function of the session (`pg_temp.<name>`, created on each connection at its first use there),
   * whose plan PL/pgSQL keeps as PostgreSQL keeps a prepared statement's; on PostgreSQL the call is a
   * prepared statement, and on PGlite too (PreparedStatements of src/pglite-prepared.ts; PGlite's
   * query parses and plans every statement at each run): the receiver's batch statement costs
   * about 1.4 ms instead of 2.1 as a function (29 rows; `npx tsx bench/pglite-statement.ts`), and
   * its call prepared, 1.67 instead of 2.12 (25 rows, thirteenth pass of BENCHMARKS.md). `body`:
   * the function's PL/pgSQL body (between BEGIN and END, `declare`: what goes after DECLARE), when
   * it does more than `RETURN QUERY <text>;`.
   * `settings`: the function's own settings (`SET name = value` clauses: in effect while it runs,
   * also when its statements are planned, and so for what is planned during the call: foreign-key
   * checks and trigger statements, whose plans the session keeps for later statements too).
   */
  signature?: { parameters: string[]; returns: string; declare?: string; body?: string; settings?: string[] }
}

export interface Database {
  kind: 'postgresql' | 'pglite'
  /** Where the data is, for messages: the folder, or the URL without its password. */
  location: string
  prisma: PrismaClient
  /**
   * Runs a hot-path statement (the receiver's batch). On PostgreSQL it goes straight to the pg pool,
   * none of Prisma's per-call work; a statement with a `name` is prepared (parsed once per connection,
   * its plan possibly cached as a generic one), one without is planned at each run (see
   * STORED_STATEMENT in src/conversion-batch.ts for when that matters). On PGlite it goes to
   * PGlite itself, not through Prisma (whose raw query costs about 0.7 ms more per batch
   * statement), between Prisma's transactions, never inside one; a statement with a `signature`
   * is prepared there too (src/pglite-prepared.ts), one without goes to PGlite's query. On both, a
   * statement with a `signature` runs as a function of the session (Statement.signature).
   * Rows come back as the driver gives them: numeric columns as strings; cast bigint to text (pg
   * gives a string, PGlite a number, or a BigInt past 2^53).
   */
  query<Row>(statement: Statement): Promise<Row[]>
  /**
   * A session for migrations and scripts: on PostgreSQL a connection of its own, without the
   * request timeouts (statement and read), with a lock timeout of MIGRATION_LOCK_TIMEOUT_MS.
   */
  withSession<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>
  close(): Promise<void>
}

export interface DatabaseOptions {
  onPoolError?: (error: Error) => void
}

export async function openDatabase(config: Config, options: DatabaseOptions = {}): Promise<Database> {
  const db = config.DATABASE_URL ? openPostgres(config, config.DATABASE_URL, options) : await openPGlite(config.DATA_DIR)
  // Closing twice (a failure path, then the app's close) closes once.
  let closing: Promise<void> | undefined
  const close = db.close
  return { ...db, close: () => (closing ??= close()) }
}

function openPostgres(config: Config, url: string, options: DatabaseOptions): Database {
  const pool = new StorePool({
    connectionString: url,
    max: config.DB_POOL_MAX,
    connectionTimeoutMillis: config.DB_CONNECT_TIMEOUT_MS,
    statement_timeout: config.DB_STATEMENT_TIMEOUT_MS,
    readTimeoutMillis: config.DB_STATEMENT_TIMEOUT_MS + 1000,
    idleTimeoutMillis: 30_000,
    application_name: 'postback-store',
    // adapter-pg reads and writes timestamptz as UTC text without an offset: the session must be UTC,
    // whatever the server's or database's own time zone is. No JIT: the summary's statement is
    // estimated costly enough to be compiled, which took 1.4 s of a 2.6 s run (the run itself 20 ms).
    options: '-c TimeZone=UTC -c jit=off',
  })
  // Without a listener, an idle connection dropped by the server crashes the process.
  pool.on('error', (error) => options.onPoolError?.(error))
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) })
  return {
    kind: 'postgresql',
    location: redactUrl(url),
    prisma,
    query: poolFunctions(pool),
    async withSession(fn) {
      // A connection of its own, not the pool's: a migration may run far longer than a request (a
      // CREATE INDEX on a large table), so neither the statement timeout nor pg's client-side read
      // timeout applies; a lock timeout does, so that a migration blocked by another session's lock
      // fails saying so instead of hanging every instance's start-up.
      const client = new StoreClient({
        connectionString: url,
        connectionTimeoutMillis: config.DB_CONNECT_TIMEOUT_MS,
        application_name: 'postback-store migrations',
      })
      // A connection dropped while idle must not crash the process; the next query fails instead.
      client.on('error', () => {})
      await client.connect()
      try {
        // Set after connecting, so that neither the URL's options nor role or database defaults win.
        await client.query(`SET statement_timeout = 0; SET lock_timeout = ${config.MIGRATION_LOCK_TIMEOUT_MS}; SET TimeZone = 'UTC'`)
        return await fn({
          query: async (sql, params) => (await client.query(sql, params)).rows,
          exec: async (sql) => {
            await client.query(sql)
          },
        })
      } finally {
        await client.end()
      }
    },
    async close() {
      await prisma.$disconnect()
      await pool.end()
    },
  }
}

async function openPGlite(dataDir: string): Promise<Database> {
  mkdirSync(dataDir, { recursive: true })
  const lock = lockDataDir(dataDir)
  try {
    const pglite = new EmbeddedStore(dataDir)
    await pglite.waitReady
    await pglite.exec("SET TimeZone = 'UTC'")
    const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) })
    return {
      kind: 'pglite',
      location: dataDir,
      prisma,
      query: sessionFunctions(pglite),
      withSession: (fn) =>
        fn({
          query: async (sql, params) => (await pglite.query(sql, params)).rows as never[],
          exec: async (sql) => {
            await pglite.exec(sql)
          },
        }),
      async close() {
        try {
          await prisma.$disconnect()
          await pglite.close()
        } finally {
          lock.release()
        }
      },
    }
  } catch (error) {
    lock.release()
    throw error
  }
}

/**
 * PGlite's statements: one with a signature as a function of the session (created at its first use,
 * once), called by a statement prepared in the session (PreparedStatements); the others by PGlite's
 * query, as they are.
 */
function sessionFunctions(pglite: PGlite): Database['query'] {
  const created = new Map<string, Promise<unknown>>()
  const prepared = new PreparedStatements(pglite)
  return async <Row>(statement: Statement) => {
    try {
      return await run<Row>(statement)
    } catch (error) {
      // PGlite's errors carry the statement's values (a whole batch's) and, from a function, its
      // body: not for the log.
      if (error && typeof error === 'object') for (const field of ['params', 'where', 'queryOptions']) delete (error as Record<string, unknown>)[field]
      throw error
    }
  }

  async function run<Row>(statement: Statement): Promise<Row[]> {
    const { name, signature, values } = statement
    if (!name || !signature) return (await pglite.query<Row>(statement.text, values)).rows
    let creating = created.get(name)
    if (!creating) {
      creating = pglite.exec(functionDefinition(statement))
      created.set(name, creating)
      creating.catch(() => created.delete(name))
    }
    await creating
    return await prepared.query<Row>(name, functionCall(statement), values)
  }
}

/**
 * PostgreSQL's query for the hot path: a statement with a signature runs as a function of the
 * connection's session (created on each connection at its first use), called by a prepared
 * statement of its name; the others through the pool as they are. A role that may not create
 * temporary objects (REVOKE TEMPORARY ... FROM PUBLIC) runs them as they are too, from the first
 * refusal on, prepared as `<name>_plain` (a prepared statement's name stays unique to its text on
 * each connection); the batch statement's text then reads the repeats by a statement of its own.
 */
function poolFunctions(pool: StorePool): Database['query'] {
  const created = new WeakMap<pg.PoolClient, Set<string>>()
  let refused = false
  // pg's callbacks, one promise around the whole call: pg's promise forms (a promise per connect and
  // per statement, each with a handler that captures a stack trace) made every scavenge of the
  // collector keep ~300 KB more under load.
  return <Row>(statement: Statement) =>
    new Promise<Row[]>((resolve, reject) => run(statement, false, (error, rows) => (error ? reject(typed(error)) : resolve(rows as Row[]))))

  function run(statement: Statement, again: boolean, done: Done): void {
    const { name, signature, text, values } = statement
    if (!name || !signature) return plain(statement, done)
    if (refused) return plain({ name: `${name}_plain`, text, values }, done)
    pool.connect((error: Error | undefined, client?: pg.PoolClient) => {
      if (error || !client) return done(error)
      // A connection lost while checked out emits 'error' (its statement fails too); without a
      // listener that would end the process. pool.query listens the same way.
      client.on('error', ignore)
      let functions = created.get(client)
      if (!functions) created.set(client, (functions = new Set()))
      const failed = (error: Error, creating: boolean) => {
        client.off('error', ignore)
        const code = (error as { code?: string }).code
        // An error the server reported leaves the connection as it was (the statement's transaction
        // rolled back); anything else (a lost connection, the read timeout) closes it.
        client.release(error instanceof pg.DatabaseError ? undefined : error)
        if (creating && code === INSUFFICIENT_PRIVILEGE) refused = true
        else if (code === UNDEFINED_FUNCTION && !again) {
          // The session lost its function (DISCARD TEMP, say): made again, and the call once more.
          functions.delete(name)
        } else return done(error)
        run(statement, true, done)
      }
      const call = () =>
        client.query({ name, text: functionCall(statement), values }, (error: Error | undefined, result: pg.QueryResult) => {
          if (error) return failed(error, false)
          client.off('error', ignore)
          client.release()
          done(undefined, result.rows)
        })
      if (functions.has(name)) return call()
      client.query(functionDefinition(statement), (error: Error | undefined) => {
        if (error) return failed(error, true)
        functions.add(name)
        call()
      })
    })
  }

  function plain(config: pg.QueryConfig, done: Done): void {
    pool.query(config, (error: Error | undefined, result: pg.QueryResult) => done(error, result?.rows))
  }
}
/** How a hot-path statement ended on PostgreSQL: pg's error, or its rows. */
type Done = (error: Error | undefined, rows?: unknown[]) => void
const INSUFFICIENT_PRIVILEGE = '42501'
const UNDEFINED_FUNCTION = '42883'
const ignore = () => {}

/**
 * PGlite whose use once closed (or closing) fails with StoreUnavailableError: a store closed under
 * a request is unavailable, not a bug. Every query, exec and transaction asks `_checkReady` first.
 */
class EmbeddedStore extends PGlite {
  override async _checkReady(): Promise<void> {
    try {
      await super._checkReady()
    } catch (error) {
      throw new StoreUnavailableError('closed', error as Error)
    }
  }
}

export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return 'postgresql://(unparseable URL)'
  }
}
