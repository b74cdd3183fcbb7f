// Who may deliver to a sheet: its secret (`token`) and its address allow-list. The secret is shown
// once and stored as its SHA-256 (a random 256-bit secret needs no slow hash); after a rotation the
// previous secret stays valid for a grace period so networks can be updated. The receiver reads
// these settings through SheetSecurityCache, so a delivery costs no extra query.
import { BlockList, isIP } from 'node:net'
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { AppError, InputError, NotFoundError } from './errors.ts'
import type { PrismaClient } from './generated/prisma/client.ts'
import type { Database } from './database.ts'

export const DEFAULT_GRACE_SECONDS = 86_400
export const MAX_GRACE_SECONDS = 90 * 86_400

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/** A delivery refused by the sheet's security settings. */
export class DeliveryForbiddenError extends AppError {
  override name = 'DeliveryForbiddenError'
  constructor(code: 'invalid_token' | 'address_not_allowed', message: string, parameter?: string) {
    super(403, code, message, parameter)
  }
}

/** Creates or rotates a sheet's secret; the previous one stays valid for `graceSeconds`. */
export async function rotateSheetToken(
  prisma: PrismaClient,
  sheetId: string,
  graceSeconds = DEFAULT_GRACE_SECONDS,
  now = new Date(),
): Promise<{ sheet_id: string; token: string }> {
  if (!Number.isInteger(graceSeconds) || graceSeconds < 0 || graceSeconds > MAX_GRACE_SECONDS) {
    throw new InputError('invalid_parameter', 'grace_seconds', `grace_seconds must be a whole number from 0 to ${MAX_GRACE_SECONDS}`)
  }
  const sheet = await prisma.sheet.findUnique({ where: { sheetId }, select: { tokenHash: true } })
  if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
  const token = `pst_${randomBytes(32).toString('base64url')}`
  const keepPrevious = sheet.tokenHash !== null && graceSeconds > 0
  await prisma.sheet.update({
    where: { sheetId },
    data: {
      tokenHash: hashToken(token).toString('hex'),
      previousTokenHash: keepPrevious ? sheet.tokenHash : null,
      previousTokenExpiresAt: keepPrevious ? new Date(now.getTime() + graceSeconds * 1000) : null,
    },
  })
  return { sheet_id: sheetId, token }
}

/** Removes a sheet's secret (and a previous one in its grace period): deliveries need no token. */
export async function clearSheetToken(prisma: PrismaClient, sheetId: string): Promise<void> {
  const { count } = await prisma.sheet.updateMany({
    where: { sheetId },
    data: { tokenHash: null, previousTokenHash: null, previousTokenExpiresAt: null },
  })
  if (count === 0) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
}

/** Checks addresses and CIDRs (IPv4 or IPv6) and returns them trimmed; a bad one is named. */
export function parseAllowList(entries: readonly string[]): string[] {
  const list = entries.map((entry) => entry.trim()).filter(Boolean)
  if (list.length === 0) throw new InputError('invalid_parameter', 'addresses', 'give at least one address or CIDR (or clear the allow-list)')
  for (const entry of list) addEntry(new BlockList(), entry)
  return [...new Set(list)]
}

function addEntry(blockList: BlockList, entry: string): void {
  const [address = '', prefix, ...rest] = entry.split('/')
  const family = isIP(address)
  const bits = family === 4 ? 32 : 128
  const valid = family !== 0 && rest.length === 0 && (prefix === undefined || (/^\d{1,3}$/.test(prefix) && Number(prefix) <= bits))
  if (!valid) {
    throw new InputError('invalid_parameter', 'addresses', `${JSON.stringify(entry)} is not an IPv4 or IPv6 address or CIDR (such as 203.0.113.0/24 or 2001:db8::/32)`)
  }
  const type = family === 4 ? 'ipv4' : 'ipv6'
  if (prefix === undefined) blockList.addAddress(address, type)
  else blockList.addSubnet(address, Number(prefix), type)
}

export async function setAllowedAddresses(prisma: PrismaClient, sheetId: string, addresses: readonly string[]): Promise<void> {
  const list = parseAllowList(addresses)
  const { count } = await prisma.sheet.updateMany({ where: { sheetId }, data: { allowedAddresses: list } })
  if (count === 0) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
}

export async function clearAllowedAddresses(prisma: PrismaClient, sheetId: string): Promise<void> {
  const { count } = await prisma.sheet.updateMany({ where: { sheetId }, data: { allowedAddresses: [] } })
  if (count === 0) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
}

/** A sheet's settings as the receiver checks them; null for a sheet that does not exist. */
export interface SheetSecurity {
  active: boolean
  tokenHash: Buffer | null
  previousTokenHash: Buffer | null
  previousTokenExpiresAt: number
  allowList: BlockList | null
}

interface SecurityRow {
  active: boolean
  token_hash: string | null
  previous_token_hash: string | null
  previous_token_expires_at: Date | string | null
  allowed_addresses: string[] | null
}

const SECURITY_STATEMENT = {
  name: 'postback_sheet_security_v1',
  text: `SELECT active, token_hash, previous_token_hash, previous_token_expires_at, allowed_addresses FROM sheets WHERE sheet_id = $1`,
}

function fromRow(row: SecurityRow | undefined): SheetSecurity | null {
  if (!row) return null
  const addresses = row.allowed_addresses ?? []
  let allowList: BlockList | null = null
  if (addresses.length) {
    allowList = new BlockList()
    // Entries were checked when set; one that no longer parses allows nothing rather than everything.
    for (const entry of addresses) {
      try {
        addEntry(allowList, entry)
      } catch {
        // skipped
      }
    }
  }
  return {
    active: row.active,
    tokenHash: row.token_hash ? Buffer.from(row.token_hash, 'hex') : null,
    previousTokenHash: row.previous_token_hash ? Buffer.from(row.previous_token_hash, 'hex') : null,
    previousTokenExpiresAt: row.previous_token_expires_at ? new Date(row.previous_token_expires_at).getTime() : 0,
    allowList,
  }
}

export interface SheetSecurityCacheOptions {
  query: Database['query']
  ttlMs: number
  /** Sheets remembered at once; beyond it the oldest entries are forgotten. */
  maxEntries?: number
  now?: () => number
}

interface Entry {
  settings: SheetSecurity | null
  loadedAt: number
}

/**
 * The security settings of sheets, read at most once per sheet per `ttlMs` on each instance: a
 * rotation, a clear or an allow-list change takes effect within that time everywhere. A cached
 * sheet is checked without waiting for anything.
 */
export class SheetSecurityCache {
  readonly #options: Required<SheetSecurityCacheOptions>
  readonly #entries = new Map<string, Entry>()
  readonly #loading = new Map<string, Promise<SheetSecurity | null>>()

  constructor(options: SheetSecurityCacheOptions) {
    this.#options = { maxEntries: 10_000, now: Date.now, ...options }
  }

  /** The cached settings while fresh, else undefined (call load). */
  cached(sheetId: string): SheetSecurity | null | undefined {
    const entry = this.#entries.get(sheetId)
    if (!entry || this.#options.now() - entry.loadedAt >= this.#options.ttlMs) return undefined
    return entry.settings
  }

  load(sheetId: string): Promise<SheetSecurity | null> {
    let loading = this.#loading.get(sheetId)
    if (!loading) {
      loading = this.#options
        .query<SecurityRow>({ ...SECURITY_STATEMENT, values: [sheetId] })
        .then((rows) => {
          const settings = fromRow(rows[0])
          this.#entries.delete(sheetId)
          if (this.#entries.size >= this.#options.maxEntries) this.#entries.delete(this.#entries.keys().next().value!)
          this.#entries.set(sheetId, { settings, loadedAt: this.#options.now() })
          return settings
        })
        .finally(() => this.#loading.delete(sheetId))
      this.#loading.set(sheetId, loading)
    }
    return loading
  }

  /**
   * Settles when the reads under way now have: each request waiting for one continued before it
   * (its callback was attached first). For a close that lets those deliveries reach the writer.
   */
  settled(): Promise<unknown> {
    return Promise.allSettled(this.#loading.values())
  }

  /** Forgets a sheet, so this instance reads it again at its next delivery (after a change made here). */
  forget(sheetId: string): void {
    this.#entries.delete(sheetId)
  }
}

/** The address as a BlockList checks it: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as IPv4. */
function addressOf(ip: string): [string, 'ipv4' | 'ipv6'] {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
  if (mapped) return [mapped[1]!, 'ipv4']
  return [ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4']
}

/**
 * Throws when a delivery may not reach the sheet: the address first (it says where a network's
 * deliveries now come from), then the secret, compared as SHA-256 digests in constant time.
 */
export function checkDelivery(settings: SheetSecurity, token: unknown, ip: string, now: number): void {
  if (settings.allowList) {
    const [address, family] = addressOf(ip)
    if (!isIP(address) || !settings.allowList.check(address, family)) {
      throw new DeliveryForbiddenError('address_not_allowed', `deliveries from ${ip} are not allowed for this sheet: add the address to its allow-list`)
    }
  }
  if (!settings.tokenHash) return
  if (typeof token !== 'string' || token === '') {
    throw new DeliveryForbiddenError('invalid_token', 'this sheet needs its secret as token=…', 'token')
  }
  const presented = hashToken(token)
  const current = timingSafeEqual(presented, settings.tokenHash)
  const previous = settings.previousTokenHash !== null && timingSafeEqual(presented, settings.previousTokenHash) && now < settings.previousTokenExpiresAt
  if (!current && !previous) throw new DeliveryForbiddenError('invalid_token', 'token is not the sheet’s secret', 'token')
}
