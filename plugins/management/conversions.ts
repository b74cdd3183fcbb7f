// Conversions: the filtered list, one by id, and the summary behind the postback conversion column.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { sheetScope } from '../../src/api-keys.ts'
import { conversionHistory, getConversion, listConversions, summarize } from '../../src/conversions.ts'
import { NotFoundError } from '../../src/errors.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { managementRoute, Conversion, ConversionHistory, ConversionPage, ConversionParams, ConversionQuery, Summary, SummaryQuery } from '../../src/schemas/management.ts'
import { principalOf } from '../auth.ts'

const listSchema = managementRoute({
  tag: 'conversions',
  summary: 'List conversions',
  description: 'Filtered and keyset-paginated. Paging through with next_cursor returns every matching row exactly once, also while new conversions arrive.',
  operationId: 'listConversions',
  querystring: ConversionQuery,
  response: { 200: ref(ConversionPage) },
})

const getSchema = managementRoute({
  tag: 'conversions',
  summary: 'Get one conversion',
  operationId: 'getConversion',
  params: ConversionParams,
  response: { 200: ref(Conversion), 404: ErrorRef },
})

const historySchema = managementRoute({
  tag: 'conversions',
  summary: "A conversion's history",
  description: 'The deliveries that stored or moved the conversion (status, network word, payout, currency), oldest first. Repeats and refused moves change nothing and are not in it.',
  operationId: 'getConversionHistory',
  params: ConversionParams,
  response: { 200: ref(ConversionHistory), 404: ErrorRef },
})

const summarySchema = managementRoute({
  tag: 'conversions',
  summary: 'Conversions and revenue per campaign, ad set, ad or event',
  description:
    'One row per group and currency (optionally per day in a time zone). `conversions` and `revenue` are the approved numbers (what the postback column shows); ' +
    'pending (revenue on hold) and rejected are beside them. Revenue is an exact decimal; different currencies are never summed together.',
  operationId: 'getSummary',
  querystring: SummaryQuery,
  response: { 200: ref(Summary) },
})

export default async function conversionRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.get('/conversions', { schema: listSchema }, async (request) =>
    listConversions(app.prisma, sheetScope(principalOf(request), request.query.sheet_id), request.query),
  )

  app.get('/conversions/:id', { schema: getSchema }, async (request) => {
    const conversion = await getConversion(app.prisma, sheetScope(principalOf(request)), request.params.id)
    if (!conversion) throw new NotFoundError('not_found', `conversion ${request.params.id} does not exist`, 'id')
    return conversion
  })

  app.get('/conversions/:id/history', { schema: historySchema }, async (request) => {
    const data = await conversionHistory(app.prisma, sheetScope(principalOf(request)), request.params.id)
    if (!data) throw new NotFoundError('not_found', `conversion ${request.params.id} does not exist`, 'id')
    return { data }
  })

  app.get('/summary', { schema: summarySchema }, async (request) => ({
    data: await summarize(app.prisma, sheetScope(principalOf(request), request.query.sheet_id), request.query),
  }))
}
