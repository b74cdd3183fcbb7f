// Management API keys: `pbk_` + 256 random bits, shown once at creation. Only the SHA-256 of a key is
// stored (a high-entropy key needs no slow hash), so a leaked table does not leak keys. A key is
// global (every sheet) or scoped to a list of sheets, and has a role: `read` (conversions, summary,
// history, diagnostics) or `admin` (also the provisioning routes under /admin).
import { createHash, randomBytes } from 'node:crypto'
import { ForbiddenError, InputError, NotFoundError } from './errors.ts'
import type { PrismaClient } from './generated/prisma/client.ts'
import type { CamelKeys } from './schemas/common.ts'
import { KEY_ROLES, type ApiKey, type CreatedApiKey, type CreateKeyBody } from './schemas/management.ts'

export type KeyRole = (typeof KEY_ROLES)[number]

const KEY_PATTERN = /^pbk_[A-Za-z0-9_-]{43}$/

/** What a request authenticated with a key may see. */
export interface Principal {
  keyId: string
  global: boolean
  sheetIds: readonly string[]
  role: KeyRole
}

/** The admin API's body in camelCase: what the API and the CLI create a key from. */
export type CreateApiKey = CamelKeys<CreateKeyBody>

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex')
}

export function isWellFormedKey(key: string): boolean {
  return KEY_PATTERN.test(key)
}

function roleOf(role: string): KeyRole {
  return (KEY_ROLES as readonly string[]).includes(role) ? (role as KeyRole) : 'read'
}

function view(key: { id: string; name: string; global: boolean; sheetIds: string[]; role: string; createdAt: Date; revokedAt: Date | null }): ApiKey {
  return {
    id: key.id,
    name: key.name,
    global: key.global,
    sheet_ids: key.sheetIds,
    role: roleOf(key.role),
    created_at: key.createdAt.toISOString(),
    revoked_at: key.revokedAt?.toISOString() ?? null,
  }
}

export async function createApiKey(prisma: PrismaClient, input: CreateApiKey): Promise<CreatedApiKey> {
  const sheetIds = [...new Set(input.sheetIds ?? [])]
  if (Boolean(input.global) === (sheetIds.length > 0)) {
    throw new InputError('invalid_parameter', 'sheet_ids', 'a key is either global or scoped to one or more sheets: give exactly one of the two')
  }
  if (sheetIds.length) {
    const found = await prisma.sheet.findMany({ where: { sheetId: { in: sheetIds } }, select: { sheetId: true } })
    const missing = sheetIds.filter((id) => !found.some((sheet) => sheet.sheetId === id))
    if (missing.length) throw new NotFoundError('unknown_sheet', `unknown sheet: ${missing.join(', ')}`, 'sheet_ids')
  }
  if (input.role !== undefined && !(KEY_ROLES as readonly string[]).includes(input.role)) {
    throw new InputError('invalid_parameter', 'role', `role must be one of: ${KEY_ROLES.join(', ')}`)
  }
  // What a key could do before roles: a global key administers, a scoped key reads.
  const role = input.role ?? (input.global ? 'admin' : 'read')
  const key = `pbk_${randomBytes(32).toString('base64url')}`
  const id = `key_${randomBytes(8).toString('hex')}`
  const created = await prisma.apiKey.create({
    data: { id, name: input.name ?? id, keyHash: hashKey(key), global: Boolean(input.global), sheetIds, role },
  })
  return { ...view(created), key }
}

export async function listApiKeys(prisma: PrismaClient): Promise<ApiKey[]> {
  return (await prisma.apiKey.findMany({ orderBy: { createdAt: 'asc' } })).map(view)
}

/** Revokes a key at once (the next request with it gets 401); revoking a revoked key changes nothing. */
export async function revokeApiKey(prisma: PrismaClient, id: string): Promise<ApiKey> {
  await prisma.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: new Date() } })
  const key = await prisma.apiKey.findUnique({ where: { id } })
  if (!key) throw new NotFoundError('unknown_key', `API key ${id} does not exist`, 'key_id')
  return view(key)
}

/** The principal of a presented key, or null when the key is unknown or revoked. */
export async function authenticate(prisma: PrismaClient, key: string): Promise<Principal | null> {
  if (!isWellFormedKey(key)) return null
  const found = await prisma.apiKey.findUnique({ where: { keyHash: hashKey(key) } })
  if (!found || found.revokedAt) return null
  return { keyId: found.id, global: found.global, sheetIds: found.global ? [] : found.sheetIds, role: roleOf(found.role) }
}

/**
 * The sheets a request may read: the one it names (if the key may see it) or, when it names none,
 * every sheet the key may see (null: all). A sheet outside a scoped key's list is a 403.
 */
export function sheetScope(principal: Principal, requested?: string): readonly string[] | null {
  if (requested !== undefined) {
    if (!principal.global && !principal.sheetIds.includes(requested)) {
      throw new ForbiddenError(`this API key may not read sheet ${requested}`, 'sheet_id')
    }
    return [requested]
  }
  return principal.global ? null : principal.sheetIds
}

/**
 * An admin route: the key needs the `admin` role; a route about one sheet also takes a sheet-scoped
 * admin key of that sheet, the others (creating sheets and keys, lists) a global one.
 */
export function requireAdmin(principal: Principal, sheetId?: string): void {
  if (principal.role !== 'admin') throw new ForbiddenError('this route needs an API key with the admin role')
  if (sheetId === undefined) {
    if (!principal.global) throw new ForbiddenError('this route needs a global admin API key')
    return
  }
  sheetScope(principal, sheetId)
}
