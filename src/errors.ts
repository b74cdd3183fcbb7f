// Typed errors thrown by handlers and services. The app's one error handler turns each into the
// shared error body `{ error, message, parameter? }` with its status code.

export type ErrorCode =
  | 'missing_parameter'
  | 'invalid_parameter'
  | 'unreplaced_macro'
  | 'unknown_currency'
  | 'repeated_parameter'
  | 'invalid_line'
  | 'invalid_file'
  | 'unknown_sheet'
  | 'sheet_exists'
  | 'unknown_key'
  | 'unauthorized'
  | 'forbidden'
  | 'invalid_token'
  | 'address_not_allowed'
  | 'not_configured'
  | 'not_found'
  | 'bad_request'
  | 'body_too_large'
  | 'unsupported_media_type'
  | 'rate_limited'
  | 'storage_unavailable'
  | 'overloaded'
  | 'internal_error'

export class AppError extends Error {
  override name = 'AppError'
  constructor(
    readonly statusCode: number,
    readonly code: ErrorCode,
    message: string,
    readonly parameter?: string,
  ) {
    super(message)
  }
}

/** A parameter that is missing, malformed, or still a tracker macro. */
export class InputError extends AppError {
  override name = 'InputError'
  constructor(code: ErrorCode, parameter: string, message: string) {
    super(400, code, message, parameter)
  }
}

export class NotFoundError extends AppError {
  override name = 'NotFoundError'
  constructor(code: 'not_found' | 'unknown_sheet' | 'unknown_key', message: string, parameter?: string) {
    super(404, code, message, parameter)
  }
}

export class ConflictError extends AppError {
  override name = 'ConflictError'
  constructor(code: 'sheet_exists', message: string, parameter?: string) {
    super(409, code, message, parameter)
  }
}

/** No usable API key: missing, malformed, unknown or revoked. */
export class UnauthorizedError extends AppError {
  override name = 'UnauthorizedError'
  constructor(message: string) {
    super(401, 'unauthorized', message)
  }
}

/** A valid key asking for what it may not see or do. */
export class ForbiddenError extends AppError {
  override name = 'ForbiddenError'
  constructor(message: string, parameter?: string) {
    super(403, 'forbidden', message, parameter)
  }
}

/** Storage could not take the write now; the caller should retry after `retryAfter` seconds. */
export class UnavailableError extends AppError {
  override name = 'UnavailableError'
  constructor(
    code: 'storage_unavailable' | 'overloaded',
    message: string,
    readonly retryAfter?: number,
  ) {
    super(503, code, message)
  }
}

export class UnknownSheetError extends AppError {
  override name = 'UnknownSheetError'
  constructor(sheetId: string) {
    super(404, 'unknown_sheet', `sheet_id ${JSON.stringify(sheetId)} is unknown or disabled`, 'sheet_id')
  }
}
