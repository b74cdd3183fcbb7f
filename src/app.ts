// The app factory: builds the whole service from a validated config. It never listens; the server
// entry (src/server.ts) and the tests both call it, so tests exercise the real composition.
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions,
  type onRouteHookHandler,
} from 'fastify'
import fp from 'fastify-plugin'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import authPlugin from '../plugins/auth.ts'
import dbPlugin from '../plugins/db.ts'
import healthPlugin from '../plugins/health.ts'
import ingestPlugin from '../plugins/ingest.ts'
import metricsPlugin from '../plugins/metrics.ts'
import opsPlugin from '../plugins/ops.ts'
import managementPlugin from '../plugins/management/index.ts'
import rateLimitPlugin from '../plugins/rate-limit.ts'
import receiverPlugin from '../plugins/receiver.ts'
import requestIdPlugin from '../plugins/request-id.ts'
import rollupsPlugin from '../plugins/rollups.ts'
import sheetSecurityPlugin from '../plugins/sheet-security.ts'
import swaggerPlugin from '../plugins/swagger.ts'
import type { Config } from './config.ts'
import { AppError, UnavailableError } from './errors.ts'
import { loggingOptions } from './logger.ts'
import { REQUEST_ID_HEADER } from './logging.ts'
import { parseQueryString } from './query-string.ts'
import { isDataError, isUnavailableError } from './storage-errors.ts'
import type { ErrorBody } from './schemas/common.ts'
import { sharedSchemas } from './schemas/index.ts'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
  }
}

export interface BuildOptions {
  logger?: FastifyServerOptions['logger']
  /** Sees every route as it is added: an onRoute hook added later would miss them (the OpenAPI test lists them). */
  onRoute?: onRouteHookHandler
}

export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    ...loggingOptions(config.LOG_LEVEL, options.logger),
    routerOptions: { querystringParser: parseQueryString, maxParamLength: 200 },
    bodyLimit: 64 * 1024,
    // Client addresses (rate limits, the rejection log) come from X-Forwarded-For only when the
    // connection is from a configured proxy; never from a header a client can write itself.
    trustProxy: config.TRUST_PROXY ? config.TRUST_PROXY.split(',') : false,
    // Unknown query parameters of the management API are refused rather than silently dropped, so a
    // misspelt filter cannot return every row. (The receiver validates with its own rules.)
    ajv: { customOptions: { removeAdditional: false } },
    // Errors raised before routing (a malformed URL path) get the same JSON error body.
    frameworkErrors: (error, request, reply: FastifyReply) => {
      reply.header(REQUEST_ID_HEADER, request.id)
      reply.code(400).send({ error: 'bad_request', message: error.message })
    },
  }).withTypeProvider<TypeBoxTypeProvider>()
  if (options.onRoute) app.addHook('onRoute', options.onRoute)

  await app.register(
    fp(
      async function configPlugin(instance) {
        instance.decorate('config', config)
      },
      { name: 'config' },
    ),
  )
  for (const schema of sharedSchemas) app.addSchema(schema)
  app.setErrorHandler(errorHandler)
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` })
  })

  await app.register(opsPlugin)
  await app.register(swaggerPlugin)
  await app.register(requestIdPlugin)
  await app.register(metricsPlugin)
  await app.register(dbPlugin)
  await app.register(ingestPlugin)
  await app.register(rollupsPlugin)
  await app.register(sheetSecurityPlugin)
  await app.register(healthPlugin)
  await app.register(rateLimitPlugin)
  await app.register(authPlugin)
  await app.register(receiverPlugin)
  await app.register(managementPlugin, { prefix: '/api/v1/postback' })
  return app
}

/** The one error handler: typed errors to their documented body, storage trouble to 503, the rest hidden as 500. */
function errorHandler(this: FastifyInstance, error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  if (error instanceof AppError) {
    if (error instanceof UnavailableError) {
      reply.header('retry-after', String(error.retryAfter ?? this.config.RETRY_AFTER_SECONDS))
      // A refusal of a full queue is logged in summary by the ingest plugin: a warn line for each
      // would cost CPU and memory exactly when the receiver has none to spare.
      if (error.code === 'overloaded') request.log.debug(error.message)
      else request.log.warn({ err: error.cause ?? error }, error.message)
    }
    const body: ErrorBody = { error: error.code, message: error.message }
    if (error.parameter) body.parameter = error.parameter
    return reply.code(error.statusCode).send(body)
  }
  if (error.validation) {
    const issue = error.validation[0]
    const params = issue?.params as { missingProperty?: string; additionalProperty?: string; allowedValues?: unknown[] } | undefined
    const parameter =
      params?.missingProperty ?? params?.additionalProperty ?? issue?.instancePath.split('/').filter(Boolean).join('.')
    const message = params?.missingProperty
      ? `${parameter} is required`
      : params?.additionalProperty
        ? `unknown parameter ${params.additionalProperty}`
        : params?.allowedValues
          ? `${parameter} must be one of: ${params.allowedValues.join(', ')}`
          : parameter && issue?.message
            ? `${parameter} ${issue.message}`
            : error.message
    const body: ErrorBody = { error: params?.missingProperty ? 'missing_parameter' : 'invalid_parameter', message }
    if (parameter) body.parameter = parameter
    return reply.code(400).send(body)
  }
  if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
    return reply.code(error.statusCode).send({ error: 'bad_request', message: error.message })
  }
  if (isDataError(error)) {
    // A value the database refused (validation should have caught it first).
    request.log.warn({ err: error }, 'database refused a value')
    return reply.code(400).send({ error: 'invalid_parameter', message: 'a parameter has a value the store cannot take' })
  }
  if (isUnavailableError(error)) {
    request.log.warn({ err: error }, 'storage unavailable')
    reply.header('retry-after', String(this.config.RETRY_AFTER_SECONDS))
    return reply.code(503).send({ error: 'storage_unavailable', message: 'storage is unavailable; retry later' })
  }
  request.log.error({ err: error }, 'unhandled error')
  return reply.code(500).send({ error: 'internal_error', message: 'internal error' })
}
