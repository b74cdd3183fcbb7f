// Sheets: the accounts conversions are delivered to. Used by the admin CLI (and the admin API).
import { CURRENCIES } from './currencies.ts'
import { ConflictError, InputError, NotFoundError } from './errors.ts'
import type { PrismaClient } from './generated/prisma/client.ts'
import type { CamelKeys } from './schemas/common.ts'
import type { CreateSheetBody, Sheet } from './schemas/management.ts'

/** The admin API's body in camelCase: what the API and the CLI create a sheet from. */
export type CreateSheet = CamelKeys<CreateSheetBody>

const SHEET_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/

/** Whether a text can name a sheet at all (sheets are created with ids of this form). */
export function isSheetId(text: string): boolean {
  return SHEET_ID.test(text)
}

interface SheetRow {
  sheetId: string
  name: string
  defaultCurrency: string
  active: boolean
  createdAt: Date
  tokenHash: string | null
  previousTokenExpiresAt: Date | null
  allowedAddresses: string[]
}

export function sheetView(sheet: SheetRow): Sheet {
  return {
    sheet_id: sheet.sheetId,
    name: sheet.name,
    default_currency: sheet.defaultCurrency,
    active: sheet.active,
    created_at: sheet.createdAt.toISOString(),
    has_token: sheet.tokenHash !== null,
    previous_token_expires_at: sheet.tokenHash && sheet.previousTokenExpiresAt ? sheet.previousTokenExpiresAt.toISOString() : null,
    allowed_addresses: sheet.allowedAddresses ?? [],
  }
}

/** One sheet's view; 404 when it does not exist. */
export async function getSheet(prisma: PrismaClient, sheetId: string): Promise<Sheet> {
  const sheet = await prisma.sheet.findUnique({ where: { sheetId } })
  if (!sheet) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
  return sheetView(sheet)
}

export async function createSheet(prisma: PrismaClient, input: CreateSheet): Promise<Sheet> {
  if (!isSheetId(input.sheetId)) {
    throw new InputError(
      'invalid_parameter',
      'sheet_id',
      'sheet id must be 1 to 128 characters of letters, digits and _ . : - (starting with a letter or digit)',
    )
  }
  const currency = (input.currency ?? 'USD').toUpperCase()
  if (!CURRENCIES.has(currency)) {
    throw new InputError('invalid_parameter', 'currency', `currency ${JSON.stringify(input.currency)} is not an ISO 4217 code`)
  }
  const created = await prisma.sheet.createManyAndReturn({
    data: [{ sheetId: input.sheetId, name: input.name ?? input.sheetId, defaultCurrency: currency }],
    skipDuplicates: true,
  })
  const sheet = created[0]
  if (!sheet) throw new ConflictError('sheet_exists', `sheet ${input.sheetId} already exists`, 'sheet_id')
  return sheetView(sheet)
}

export async function disableSheet(prisma: PrismaClient, sheetId: string): Promise<Sheet> {
  const { count } = await prisma.sheet.updateMany({ where: { sheetId }, data: { active: false } })
  if (count === 0) throw new NotFoundError('unknown_sheet', `sheet ${sheetId} does not exist`, 'sheet_id')
  return sheetView(await prisma.sheet.findUniqueOrThrow({ where: { sheetId } }))
}

export async function listSheets(prisma: PrismaClient): Promise<Sheet[]> {
  const sheets = await prisma.sheet.findMany({ orderBy: { createdAt: 'asc' } })
  return sheets.map(sheetView)
}
