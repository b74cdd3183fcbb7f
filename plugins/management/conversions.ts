// Conversions: the filtered list, one by id, and the summary behind the postback conversion column.
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { sheetScope } from '../../src/api-keys.ts'
import { changesPage } from '../../src/changes.ts'
import { conversionHistory, getConversion, listConversions, summarize } from '../../src/conversions.ts'
import { NotFoundError } from '../../src/errors.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { managementRoute, ChangePage, ChangeQuery, Conversion, ConversionHistory, ConversionPage, ConversionParams, ConversionQuery, Summary, SummaryQuery } from '../../src/schemas/management.ts'
import { principalOf } from '../auth.ts'

const listSchema = managementRoute({
  tag: 'conversions',
  summary: 'List conversions',
  description:
    'Filtered and keyset-paginated by received_at, a view for people and reports. Paging with next_cursor never returns a row twice, but a conversion ' +
    'committed while you page can land before your position (received_at is taken when its batch starts, and batches commit out of that order), ' +
    'so a walk may miss conversions that arrive during it; next_cursor is null on the last page. Services that keep a copy follow /changes instead.',
  operationId: 'listConversions',
  querystring: ConversionQuery,
  response: { 200: ref(ConversionPage) },
})

const changesSchema = managementRoute({
  tag: 'conversions',
  summary: 'Follow every change: the feed for keeping a copy',
  description:
    'Every stored conversion (`stored`) and every status move (`updated`), each exactly once, a conversion\'s `stored` before its `updated`s, ' +
    'under any number of instances writing at once. Start without `after`, then always pass the `next` of the previous page, also of an empty one. ' +
    'A change is in the feed once its transaction and every write transaction that began before it have committed (PostgreSQL: any on the server); ' +
    'with `wait`, the request holds until then. Unlike the conversion list, the feed orders by commit, not by time: services that keep a copy follow it.',
  operationId: 'listChanges',
  querystring: ChangeQuery,
  response: { 200: ref(ChangePage) },
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

  app.get('/changes', { schema: changesSchema }, async (request, reply) => {
    // A client that goes away ends its long poll (also one gone before the handler ran).
    const gone = new AbortController()
    reply.raw.once('close', () => gone.abort())
    if (request.raw.destroyed || reply.raw.destroyed) gone.abort()
    return changesPage(app.prisma, app.changeSignal, sheetScope(principalOf(request), request.query.sheet_id), request.query, gone.signal)
  })

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

  app.get('/summary', { schema: summarySchema }, async (request, reply) => {
    const data = await summarize(app.db, sheetScope(principalOf(request), request.query.sheet_id), request.query)
    // Written by JSON.stringify, not the schema's serializer: a month of days per ad is 18,000 rows,
    // which the serializer wrote in 40 ms, checking each value's type list (string or null). The
    // statement's columns are the schema's, typed by the SQL (ints, decimal text, text or null).
    return reply.type('application/json; charset=utf-8').send(JSON.stringify({ data }) as never)
  })
}
