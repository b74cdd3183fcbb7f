// The OpenAPI document, generated from the route schemas of both surfaces, and Swagger UI at /docs
// (https://github.com/fastify/fastify-swagger, https://github.com/fastify/fastify-swagger-ui).
// Shared schemas (added with $id) become named components; routes without tags (health, metrics,
// docs) are left out. `npm run openapi` writes the document to openapi.yaml.
import fastifySwagger from '@fastify/swagger'
import fastifySwaggerUi from '@fastify/swagger-ui'
import fp from 'fastify-plugin'
import packageJson from '../package.json' with { type: 'json' }

export default fp(
  async function swaggerPlugin(app) {
    await app.register(fastifySwagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Postback store',
          version: packageJson.version,
          description:
            'Server-to-server conversion store. The public receiver takes postbacks from affiliate networks and ' +
            'trackers; the management API (bearer API keys) reads stored conversions back.',
          license: { name: 'UNLICENSED', identifier: 'UNLICENSED' },
        },
        servers: [{ url: '/', description: 'This service' }],
        tags: [
          { name: 'receiver', description: 'Public postback receiver for networks and trackers' },
          { name: 'conversions', description: 'Stored conversions and their summary' },
          { name: 'diagnostics', description: 'Is a network delivering? Rejections, status, receiver URLs' },
          { name: 'admin', description: 'Sheets and API keys (global keys only)' },
        ],
        components: {
          securitySchemes: {
            bearerAuth: { type: 'http', scheme: 'bearer', description: 'An API key from `postback-admin key create`' },
          },
        },
      },
      hideUntagged: true,
      // Name each shared schema's component by its $id.
      refResolver: {
        buildLocalReference: (json, _baseUri, _fragment, index) => (typeof json.$id === 'string' ? json.$id : `def-${index}`),
      },
    })
    await app.register(fastifySwaggerUi, { routePrefix: '/docs' })
  },
  { name: 'swagger' },
)
