// Schemas shared by both surfaces. Each has an `$id`: it is added once with app.addSchema() and
// referenced by Type.Ref(), so the OpenAPI document names it as a component.
import { Type, type Static } from '@sinclair/typebox'

export const ErrorBody = Type.Object(
  {
    error: Type.String({ description: 'Machine-readable error code, e.g. `missing_parameter`' }),
    message: Type.String({ description: 'What is wrong and how to fix it' }),
    parameter: Type.Optional(Type.String({ description: 'The request parameter the error is about' })),
  },
  { $id: 'ErrorBody', description: 'The error body of every non-2xx answer' },
)
export type ErrorBody = Static<typeof ErrorBody>

export const ErrorRef = Type.Ref(ErrorBody)

export const sharedSchemas = [ErrorBody]
