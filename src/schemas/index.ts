// Every shared schema, added to the app once (app.addSchema) so that refs resolve and the OpenAPI
// document names them as components.
import { ErrorBody } from './common.ts'
import { managementSchemas } from './management.ts'
import { reconcileSchemas } from './reconcile.ts'

export const sharedSchemas = [ErrorBody, ...managementSchemas, ...reconcileSchemas]
