// POST /sheets/{sheet_id}/reconcile: a network's export (CSV or JSON lines, streamed in) against the
// sheet's stored conversions; the answer is the report and the differing conversions, streamed out.
import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { sheetScope } from '../../src/api-keys.ts'
import { AppError, UnavailableError } from '../../src/errors.ts'
import type { StatusMapping } from '../../src/lifecycle.ts'
import type { FileFormat } from '../../src/file-lines.ts'
import { reconcile } from '../../src/reconcile.ts'
import { ErrorRef, ref } from '../../src/schemas/common.ts'
import { managementRoute, SheetParams } from '../../src/schemas/management.ts'
import { ReconcileQuery, ReconcileResult, type Difference, type ReconcileReport } from '../../src/schemas/reconcile.ts'
import { parseTime } from '../../src/conversions.ts'
import { principalOf } from '../auth.ts'

const FORMATS: Record<string, FileFormat> = { 'text/csv': 'csv', 'application/x-ndjson': 'jsonl', 'application/jsonl': 'jsonl' }

/** A request's export as it arrives, and its format (from its content type). */
interface Upload {
  stream: Readable
  format: FileFormat
}
const DEFAULT_LIMIT = 10_000
const IDLE_MS = 60_000

const reconcileSchema = managementRoute({
  tag: 'diagnostics',
  summary: "Reconcile a sheet with a network's export",
  description:
    "Which conversions differ between the sheet and a network's export, and why. The body is the export: CSV with a header " +
    '(`text/csv`) or JSON lines (`application/x-ndjson`), columns by name: `transaction_id` required; `event`, `payout`, ' +
    '`currency`, `status` (network words map as on the receiver), `received_at` or `date` optional. The answer has the totals ' +
    'of both sides per status and currency, the differences by kind, and each differing conversion once; for one missing ' +
    'here, the rejected deliveries whose query carried its transaction_id, or none when no delivery was received. ' +
    'The answer is streamed; a body larger than RECONCILE_BODY_MAX_BYTES is refused with 413.',
  operationId: 'reconcile',
  params: SheetParams,
  querystring: ReconcileQuery,
  body: {
    content: Object.fromEntries(Object.keys(FORMATS).map((type) => [type, { schema: { type: 'string', description: 'The export' } }])),
  },
  response: { 200: ref(ReconcileResult), 404: ErrorRef, 413: ErrorRef, 415: ErrorRef, 503: ErrorRef },
})

const tooLarge = (max: number) =>
  new AppError(413, 'body_too_large', `the export is larger than RECONCILE_BODY_MAX_BYTES (${max} bytes); reconcile it in parts (from/to) or with postback-admin reconcile`)

/** The stream's chunks, failing once more than `max` bytes passed; pulled by the reader, so the failure reaches it. */
async function * limitBytes(input: Readable, max: number): AsyncGenerator<Buffer> {
  let seen = 0
  for await (const chunk of input as AsyncIterable<Buffer>) {
    seen += chunk.length
    if (seen > max) throw tooLarge(max)
    yield chunk
  }
}

export default async function reconcileRoutes(fastify: FastifyInstance) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  // The export is read by the handler as it arrives, not buffered: the parser keeps the stream aside
  // and leaves an empty body for the schema (which only documents the content types).
  const uploads = new WeakMap<FastifyRequest, Upload>()
  app.addContentTypeParser(Object.keys(FORMATS), (request, payload, done) => {
    uploads.set(request, { stream: payload, format: FORMATS[request.headers['content-type']!.split(';')[0]!.trim().toLowerCase()]! })
    done(null, '')
  })

  let running = 0
  app.post('/sheets/:sheet_id/reconcile', { schema: reconcileSchema }, async (request, reply) => {
    const sheetId = request.params.sheet_id
    sheetScope(principalOf(request), sheetId)
    const upload = uploads.get(request)
    if (!upload) throw new AppError(415, 'unsupported_media_type', `send the export as ${Object.keys(FORMATS).join(' or ')}`)
    const { RECONCILE_BODY_MAX_BYTES: maxBytes, RECONCILE_CONCURRENCY: concurrency } = app.config
    if (Number(request.headers['content-length']) > maxBytes) throw tooLarge(maxBytes)
    // Each one holds a connection of its own (PostgreSQL) or the one connection (PGlite) for a while.
    if (running >= concurrency) throw new UnavailableError('overloaded', `${running} reconciliations are running on this instance (RECONCILE_CONCURRENCY); retry later`)
    const { from, to, limit = DEFAULT_LIMIT, ...mapping } = request.query
    running++
    try {
      return await reconcileRequest(sheetId, upload, maxBytes, { from, to, limit, mapping }, reply)
    } finally {
      running--
    }
  })

  async function reconcileRequest(sheetId: string, upload: Upload, maxBytes: number, query: { from?: string; to?: string; limit: number; mapping: StatusMapping }, reply: FastifyReply) {
    // The rejection log as of now: the receiver's buffered entries are evidence too.
    await app.deliveryLog.flush()
    const input = Readable.from(limitBytes(upload.stream, maxBytes), { objectMode: false })
    const { format } = upload
    const { from, to, limit, mapping } = query
    return reconcile(
      app.db,
      {
        sheetId,
        input,
        format,
        from: from ? parseTime('from', from) : undefined,
        to: to ? parseTime('to', to) : undefined,
        mapping,
        statementTimeoutMs: app.config.RECONCILE_STATEMENT_TIMEOUT_MS,
      },
      async (report, differences) => {
        // Written as it is read: the report, then the differences one by one, then `truncated`. A client
        // that reads nothing for a minute is cut off, so that the staged tables and the session are freed.
        const idle = setTimeout(() => reply.raw.destroy(), IDLE_MS)
        const body = Readable.from(streamResult(report, differences, limit, () => idle.refresh()))
        reply.type('application/json; charset=utf-8')
        // A stream is sent as it is, not through the response schema (which documents it).
        await reply.send(body as never)
        // The staged tables are dropped when the whole answer has been read, or the client is gone.
        await new Promise<void>((resolve) => {
          body.on('close', resolve)
        })
        clearTimeout(idle)
        return reply
      },
    )
  }
}

/** The answer's JSON in pieces; `progress` is called as each is taken. */
async function * streamResult(report: ReconcileReport, differences: AsyncIterable<Difference>, limit: number, progress: () => void): AsyncGenerator<string> {
  const head = JSON.stringify(report)
  yield `${head.slice(0, -1)},"differences":[`
  let listed = 0
  let truncated = false
  for await (const difference of differences) {
    if (listed === limit) {
      truncated = true
      break
    }
    progress()
    yield `${listed === 0 ? '' : ','}${JSON.stringify(difference)}`
    listed++
  }
  yield `],"truncated":${truncated}}`
}
