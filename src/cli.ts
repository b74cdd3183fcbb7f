// postback-admin: provisions sheets and API keys, and applies migrations. Every command prints one JSON value as
// the last line of stdout and exits 0; an error goes to stderr with a non-zero exit (2 for usage).
// Only `migrate` changes the schema: any other command on a store that is behind stops, changing nothing.
import { open } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { createApiKey, listApiKeys, revokeApiKey } from './api-keys.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'
import { DataDirLockedError } from './data-dir-lock.ts'
import { openDatabase, type Database } from './database.ts'
import { ImportFileError } from './file-lines.ts'
import { importCsv, parseFileTime, type ImportCounts } from './import.ts'
import { reconcile } from './reconcile.ts'
import { openDifferencesFile, reasonText, reconcileSummary, writeDifferences } from './reconcile-output.ts'
import { foldAll } from './rollups.ts'
import { migrate, MigrationError, pendingMigrations } from './migrations.ts'
import { AppError, type InputError } from './errors.ts'
import { clearAllowedAddresses, clearSheetToken, DEFAULT_GRACE_SECONDS, rotateSheetToken, setAllowedAddresses } from './sheet-security.ts'
import { createSheet, disableSheet, getSheet, listSheets } from './sheets.ts'

const USAGE = `usage: postback-admin <command>
  sheet create --id ID [--name NAME] [--currency CUR]
  sheet disable ID
  sheet list
  sheet token ID [--grace SECONDS]    create or rotate the sheet's secret (shown once)
  sheet token ID --clear
  sheet allow ID --addresses ADDR[,CIDR...]
  sheet allow ID --clear
  key create (--sheet ID[,ID...] | --global) [--name NAME] [--role read|admin]
  key list
  key revoke KEY_ID
  import --sheet ID [--no-fold] FILE.csv
                                      conversions from a CSV export (header names the columns; - reads stdin), then
                                      folded into the summary rollups, unless --no-fold (a running service folds them)
  reconcile --sheet ID [--from T] [--to T] [--out FILE.csv] [--approved-status W,..] [--pending-status W,..]
            [--rejected-status W,..] EXPORT.csv|EXPORT.jsonl
                                      which conversions differ from a network's export, and why: a summary, the JSON
                                      report as the last line, and with --out every difference as CSV
  migrate
Settings come from the environment (DATABASE_URL, or DATA_DIR for the embedded store).`

class UsageError extends Error {}

/** Reads its arguments (a usage error needs no store), then returns the work to do on the store. */
type Command = (args: string[], io: CliContext) => (db: Database) => Promise<unknown>

const commands: Record<string, Command> = {
  'sheet create': (args) => {
    const { values } = parseArgs({
      args,
      options: { id: { type: 'string' }, name: { type: 'string' }, currency: { type: 'string' } },
    })
    const sheetId = values.id
    if (!sheetId) throw new UsageError('sheet create needs --id ID')
    return (db) => createSheet(db.prisma, { sheetId, name: values.name, currency: values.currency })
  },
  'sheet disable': (args) => {
    const [id, ...extra] = parseArgs({ args, allowPositionals: true }).positionals
    if (!id || extra.length) throw new UsageError('sheet disable takes one sheet id')
    return (db) => disableSheet(db.prisma, id)
  },
  'sheet list': (args) => {
    parseArgs({ args })
    return (db) => listSheets(db.prisma)
  },
  'sheet token': (args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { grace: { type: 'string' }, clear: { type: 'boolean' } } })
    const [id, ...extra] = positionals
    if (!id || extra.length) throw new UsageError('sheet token takes one sheet id')
    if (values.clear) {
      if (values.grace !== undefined) throw new UsageError('sheet token: --clear takes no --grace')
      return async (db) => {
        await clearSheetToken(db.prisma, id)
        return getSheet(db.prisma, id)
      }
    }
    if (values.grace !== undefined && !/^\d+$/.test(values.grace)) throw new UsageError('sheet token: --grace takes a whole number of seconds')
    return (db) => rotateSheetToken(db.prisma, id, values.grace === undefined ? DEFAULT_GRACE_SECONDS : Number(values.grace))
  },
  'sheet allow': (args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { addresses: { type: 'string' }, clear: { type: 'boolean' } } })
    const [id, ...extra] = positionals
    if (!id || extra.length) throw new UsageError('sheet allow takes one sheet id')
    if (Boolean(values.clear) === (values.addresses !== undefined)) throw new UsageError('sheet allow needs --addresses LIST or --clear')
    return async (db) => {
      if (values.clear) await clearAllowedAddresses(db.prisma, id)
      else await setAllowedAddresses(db.prisma, id, values.addresses!.split(','))
      return getSheet(db.prisma, id)
    }
  },
  'key create': (args) => {
    const { values } = parseArgs({
      args,
      options: { sheet: { type: 'string' }, global: { type: 'boolean' }, name: { type: 'string' }, role: { type: 'string' } },
    })
    if (Boolean(values.sheet) === Boolean(values.global)) throw new UsageError('key create needs --sheet ID[,ID...] or --global')
    const role = values.role
    if (role !== undefined && role !== 'read' && role !== 'admin') throw new UsageError('key create: --role is read or admin')
    const sheetIds = values.sheet?.split(',').map((id) => id.trim()).filter(Boolean)
    return (db) => createApiKey(db.prisma, { name: values.name, global: values.global, sheetIds, role })
  },
  'key list': (args) => {
    parseArgs({ args })
    return (db) => listApiKeys(db.prisma)
  },
  'key revoke': (args) => {
    const [id, ...extra] = parseArgs({ args, allowPositionals: true }).positionals
    if (!id || extra.length) throw new UsageError('key revoke takes one key id')
    return (db) => revokeApiKey(db.prisma, id)
  },
  import: (args, io) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { sheet: { type: 'string' }, 'no-fold': { type: 'boolean', default: false } } })
    const [file, ...extra] = positionals
    if (!values.sheet || !file || extra.length) throw new UsageError('import needs --sheet ID and one FILE.csv (- for stdin)')
    const sheetId = values.sheet
    return async (db) => {
      const input = file === '-' ? (io.stdin ?? process.stdin) : await openFile(file)
      const progress = io.stderr.isTTY ? progressLine(io.stderr) : undefined
      try {
        const result = await importCsv(db, {
          sheetId,
          input,
          onRejected: (line, error) => io.stderr.write(`${progress?.clear() ?? ''}${badLine(line, error)}`),
          onProgress: progress?.update,
        })
        // The summary's rollups take the import in before the command ends (with a running service,
        // whichever folds first), so that summaries read them from the first request on.
        if (result.imported + result.updated > 0 && !values['no-fold']) {
          if (progress) io.stderr.write(`${progress.clear()}folding the import into the summary rollups...\n`)
          // The import is committed: a failed fold is the service's to finish, not a failed import.
          await foldAll(db.prisma).catch((error: unknown) =>
            io.stderr.write(`imported; folding into the summary rollups failed (${(error as Error).message}); the service folds it when it runs\n`),
          )
        }
        return result
      } finally {
        progress?.done()
        // A file read only in part (a header it refused) is closed here, not by the garbage collector.
        if (file !== '-') input.destroy()
      }
    }
  },
  reconcile: (args, io) => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        sheet: { type: 'string' },
        from: { type: 'string' },
        to: { type: 'string' },
        out: { type: 'string' },
        format: { type: 'string' },
        'approved-status': { type: 'string' },
        'pending-status': { type: 'string' },
        'rejected-status': { type: 'string' },
      },
    })
    const [file, ...extra] = positionals
    if (!values.sheet || !file || extra.length) throw new UsageError('reconcile needs --sheet ID and one export file (- for stdin)')
    const format = values.format ?? (/\.(jsonl|ndjson)$/i.test(file) ? 'jsonl' : 'csv')
    if (format !== 'csv' && format !== 'jsonl') throw new UsageError('--format is csv or jsonl')
    const from = values.from === undefined ? undefined : parseFileTime('from', values.from)
    const to = values.to === undefined ? undefined : parseFileTime('to', values.to)
    const mapping = Object.fromEntries(
      (['approved', 'pending', 'rejected'] as const).flatMap((status) => {
        const words = values[`${status}-status`]
        return words === undefined ? [] : [[`${status}_status`, words]]
      }),
    )
    const sheetId = values.sheet
    return async (db) => {
      const input = file === '-' ? (io.stdin ?? process.stdin) : await openFile(file)
      const out = values.out === undefined
        ? undefined
        : await openDifferencesFile(values.out).catch((error: unknown) => {
          if (file !== '-') input.destroy()
          throw error
        })
      try {
        return await reconcile(
          db,
          { sheetId, input, format, from, to, mapping, onRejected: (line, error) => io.stderr.write(badLine(line, error)) },
          async (report, differences) => {
            if (out) await writeDifferences(out, differences)
            io.stdout.write(reconcileSummary(report, values.out))
            return report
          },
        )
      } finally {
        if (file !== '-') input.destroy()
        await out?.close().catch(() => {})
      }
    }
  },
  migrate: (args) => {
    parseArgs({ args })
    return async (db) => ({ store: db.kind, ...(await db.withSession((session) => migrate(session))) })
  },
}

/** Where the command writes (the process's streams, or a test's buffers), and how it opens the store. */
export interface CliContext {
  stdout: { write(text: string): unknown }
  /** A terminal (isTTY) also gets the import's progress line. */
  stderr: { write(text: string): unknown; isTTY?: boolean }
  /** Default: process.stdin (`import ... -`). */
  stdin?: Readable
  /** Default: openDatabase. A test may hand every command one store it keeps open. */
  openDatabase?: (config: Config) => Promise<Database>
}

/** Runs one command; resolves with the exit code. `env` defaults to the process's environment. */
export async function run(argv: string[], env?: Record<string, string | undefined>, io: CliContext = process): Promise<number> {
  const [first = '', second = '', ...rest] = argv
  const name = commands[`${first} ${second}`] ? `${first} ${second}` : first
  const command = commands[name]
  if (!command || first === '--help') {
    io.stderr.write(`${USAGE}\n`)
    return first === '--help' ? 0 : 2
  }
  const args = name === first ? [second, ...rest].filter(Boolean) : rest
  let db: Database | undefined
  try {
    const work = command(args, io)
    const config = loadConfig(env)
    db = await (io.openDatabase ?? openDatabase)(config)
    if (name !== 'migrate') await requireCurrentSchema(db)
    const result = await work(db)
    io.stdout.write(`${JSON.stringify(result)}\n`)
    return 0
  } catch (error) {
    const known = [UsageError, ConfigError, DataDirLockedError, MigrationError, AppError].some((type) => error instanceof type)
    const isParseError = (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    io.stderr.write(`postback-admin: ${known || isParseError ? (error as Error).message : String((error as Error).stack ?? error)}\n`)
    return error instanceof UsageError || isParseError ? 2 : 1
  } finally {
    await db?.close()
  }
}

async function requireCurrentSchema(db: Database): Promise<void> {
  const pending = await db.withSession((session) => pendingMigrations(session))
  if (pending.length === 0) return
  const count = `${pending.length} migration${pending.length === 1 ? '' : 's'}`
  throw new MigrationError(`the store's schema is behind: ${count} pending (${pending.join(', ')}); run \`postback-admin migrate\``)
}

/** A line of a file refused (import, reconcile), as stderr reports it. */
const badLine = (line: number, error: InputError) => `line ${line}: ${reasonText(error.code, error.parameter)}: ${error.message}\n`

/** The import's progress on a terminal: one line, rewritten after each chunk. */
function progressLine(stderr: { write(text: string): unknown }) {
  const started = performance.now()
  let shown = false
  return {
    update(counts: ImportCounts) {
      const rate = Math.round(counts.lines / ((performance.now() - started) / 1000))
      stderr.write(`\r${counts.lines} lines: ${counts.imported} imported, ${counts.updated} updated, ${counts.duplicate} duplicate, ${counts.rejected} rejected (${rate} lines/s)`)
      shown = true
    },
    clear(): string {
      if (!shown) return ''
      shown = false
      return '\r\u001b[K'
    },
    done() {
      if (shown) stderr.write('\n')
    },
  }
}

async function openFile(file: string) {
  try {
    return (await open(file)).createReadStream()
  } catch (error) {
    throw new ImportFileError(`cannot read ${file}: ${(error as Error).message}`)
  }
}
