// postback-admin: provisions sheets and API keys, and applies migrations. Every command prints one JSON value as
// the last line of stdout and exits 0; an error goes to stderr with a non-zero exit (2 for usage).
import { parseArgs } from 'node:util'
import { createApiKey, listApiKeys, revokeApiKey } from './api-keys.ts'
import { ConfigError, loadConfig } from './config.ts'
import { DataDirLockedError } from './data-dir-lock.ts'
import { openDatabase, type Database } from './database.ts'
import { migrate, MigrationError } from './migrations.ts'
import { AppError } from './errors.ts'
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
  migrate
Settings come from the environment (DATABASE_URL, or DATA_DIR for the embedded store).`

class UsageError extends Error {}

type Command = (db: Database, args: string[]) => Promise<unknown>

const commands: Record<string, Command> = {
  'sheet create': async (db, args) => {
    const { values } = parseArgs({
      args,
      options: { id: { type: 'string' }, name: { type: 'string' }, currency: { type: 'string' } },
    })
    if (!values.id) throw new UsageError('sheet create needs --id ID')
    return createSheet(db.prisma, { sheetId: values.id, name: values.name, currency: values.currency })
  },
  'sheet disable': async (db, args) => {
    const [id, ...extra] = parseArgs({ args, allowPositionals: true }).positionals
    if (!id || extra.length) throw new UsageError('sheet disable takes one sheet id')
    return disableSheet(db.prisma, id)
  },
  'sheet list': async (db, args) => {
    parseArgs({ args })
    return listSheets(db.prisma)
  },
  'sheet token': async (db, args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { grace: { type: 'string' }, clear: { type: 'boolean' } } })
    const [id, ...extra] = positionals
    if (!id || extra.length) throw new UsageError('sheet token takes one sheet id')
    if (values.clear) {
      if (values.grace !== undefined) throw new UsageError('sheet token: --clear takes no --grace')
      await clearSheetToken(db.prisma, id)
      return getSheet(db.prisma, id)
    }
    if (values.grace !== undefined && !/^\d+$/.test(values.grace)) throw new UsageError('sheet token: --grace takes a whole number of seconds')
    return rotateSheetToken(db.prisma, id, values.grace === undefined ? DEFAULT_GRACE_SECONDS : Number(values.grace))
  },
  'sheet allow': async (db, args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { addresses: { type: 'string' }, clear: { type: 'boolean' } } })
    const [id, ...extra] = positionals
    if (!id || extra.length) throw new UsageError('sheet allow takes one sheet id')
    if (Boolean(values.clear) === (values.addresses !== undefined)) throw new UsageError('sheet allow needs --addresses LIST or --clear')
    if (values.clear) await clearAllowedAddresses(db.prisma, id)
    else await setAllowedAddresses(db.prisma, id, values.addresses!.split(','))
    return getSheet(db.prisma, id)
  },
  'key create': async (db, args) => {
    const { values } = parseArgs({
      args,
      options: { sheet: { type: 'string' }, global: { type: 'boolean' }, name: { type: 'string' }, role: { type: 'string' } },
    })
    if (Boolean(values.sheet) === Boolean(values.global)) throw new UsageError('key create needs --sheet ID[,ID...] or --global')
    if (values.role !== undefined && values.role !== 'read' && values.role !== 'admin') throw new UsageError('key create: --role is read or admin')
    const sheetIds = values.sheet?.split(',').map((id) => id.trim()).filter(Boolean)
    return createApiKey(db.prisma, { name: values.name, global: values.global, sheetIds, role: values.role })
  },
  'key list': async (db, args) => {
    parseArgs({ args })
    return listApiKeys(db.prisma)
  },
  'key revoke': async (db, args) => {
    const [id, ...extra] = parseArgs({ args, allowPositionals: true }).positionals
    if (!id || extra.length) throw new UsageError('key revoke takes one key id')
    return revokeApiKey(db.prisma, id)
  },
  migrate: async () => null, // migrations run for every command, below; this one only reports them
}

export async function run(argv: string[], env = process.env): Promise<number> {
  const [first = '', second = '', ...rest] = argv
  const name = commands[`${first} ${second}`] ? `${first} ${second}` : first
  const command = commands[name]
  if (!command || first === '--help') {
    process.stderr.write(`${USAGE}\n`)
    return first === '--help' ? 0 : 2
  }
  const args = name === first ? [second, ...rest].filter(Boolean) : rest
  let db: Database | undefined
  try {
    const config = loadConfig(env)
    db = await openDatabase(config)
    const migrations = await db.withSession((session) => migrate(session))
    const result = name === 'migrate' ? { store: db.kind, ...migrations } : await command(db, args)
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return 0
  } catch (error) {
    const known = [UsageError, ConfigError, DataDirLockedError, MigrationError, AppError].some((type) => error instanceof type)
    const isParseError = (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    process.stderr.write(`postback-admin: ${known || isParseError ? (error as Error).message : String((error as Error).stack ?? error)}\n`)
    return error instanceof UsageError || isParseError ? 2 : 1
  } finally {
    await db?.close()
  }
}
