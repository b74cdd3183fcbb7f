// Schemas shared by both surfaces. Each has an `$id`: it is added once with app.addSchema() and
// referenced with ref(), so the OpenAPI document names it as a component instead of copying it.
import { Type, type Static, type TSchema } from '@sinclair/typebox'

/** A typed reference to a shared schema (TypeBox 0.34's recommended form of the old Type.Ref(schema)). */
export function ref<T extends TSchema>(schema: T) {
  return Type.Unsafe<Static<T>>(Type.Ref(schema.$id!))
}

/** A string from a fixed list: one `enum` (rather than a union of constants), so that a bad value's
 * error can list what is allowed and the OpenAPI document shows a plain enum. */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description?: string; default?: T[number] } = {}) {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })
}

// A value or null, as a type list (`type: ['string', 'null']`, OpenAPI 3.1) rather than `anyOf`: the
// response serializer picks an `anyOf` branch by validating the value against each, which for a
// summary of 16,000 rows (three such ids a row) cost more than writing the JSON.
export const Nullable = <T extends TSchema & { type: string }>(schema: T) => Type.Unsafe<Static<T> | null>({ ...schema, type: [schema.type, 'null'] })

export const ErrorBody = Type.Object(
  {
    error: Type.String({ description: 'Machine-readable error code, e.g. `missing_parameter`' }),
    message: Type.String({ description: 'What is wrong and how to fix it' }),
    parameter: Type.Optional(Type.String({ description: 'The request parameter the error is about' })),
  },
  { $id: 'ErrorBody', description: 'The error body of every non-2xx answer' },
)
export type ErrorBody = Static<typeof ErrorBody>

export const ErrorRef = ref(ErrorBody)

type Camel<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Head}${Capitalize<Camel<Tail>>}` : S

/** A schema's type with camelCase keys (`sheet_id` to `sheetId`), for the services' inputs that the
 * API's snake_case bodies map onto; optional keys stay optional. */
export type CamelKeys<T> = { [K in keyof T as K extends string ? Camel<K> : K]: T[K] }
