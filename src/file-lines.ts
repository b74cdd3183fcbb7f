// Reading a conversions file line by line, by column name: a CSV file with a header row (the import,
// a reconciliation's network export) or JSON lines (one object per line, keys as column names). The
// file is streamed: memory does not grow with its size. Values are trimmed; an empty one is absent.
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'
import { parse } from 'csv-parse'
import { AppError, InputError } from './errors.ts'

export type FileFormat = 'csv' | 'jsonl'

/** A file that cannot be read as a whole (no header, not CSV): nothing after the failure is read. */
export class ImportFileError extends AppError {
  override name = 'ImportFileError'
  constructor(message: string) {
    super(400, 'invalid_file', message)
  }
}

/** A data line: its number in the file (a CSV header is line 1) and its known columns' values. */
export interface FileLine<Column extends string> {
  line: number
  values: Partial<Record<Column, string>>
  /** Set instead of values when the line cannot be split into columns. */
  error?: InputError
}

export interface ReadOptions<Column extends string> {
  format?: FileFormat
  /** The columns read; others are ignored (and listed in `ignored`). */
  columns: readonly Column[]
  /** The column every CSV header must name. */
  required: Column
}

/** The lines of a file, in order; `ignored` holds the columns it had that are not read (once its header is read). */
export function readFileLines<Column extends string>(input: Readable, options: ReadOptions<Column>): { lines: AsyncGenerator<FileLine<Column>>; ignored: Set<string> } {
  const ignored = new Set<string>()
  return { lines: options.format === 'jsonl' ? jsonLines(input, options, ignored) : csvLines(input, options, ignored), ignored }
}

async function * csvLines<Column extends string>(input: Readable, { columns, required }: ReadOptions<Column>, ignored: Set<string>): AsyncGenerator<FileLine<Column>> {
  const parser = parse({ bom: true, relax_column_count: true, skip_empty_lines: true })
  // Each record with the number of its last line: the parser's count of lines read when it pushes
  // the record, as its `info` option reports it (that option builds an object of nine statistics
  // per record: a tenth of the import's CPU in Node.js).
  const push = parser.push.bind(parser)
  parser.push = (record: string[] | null) => push(record === null ? null : { record, line: parser.info.lines })
  // A read error of the file ends the parse with it (pipe alone would leave the parser waiting).
  input.on('error', (error) => parser.destroy(error))
  input.pipe(parser)
  let header: Array<Column | null> | undefined
  try {
    for await (const { record, line } of parser as AsyncIterable<{ record: string[]; line: number }>) {
      if (!header) {
        const names = record.map((name) => name.trim().toLowerCase())
        header = names.map((name) => ((columns as readonly string[]).includes(name) ? (name as Column) : null))
        for (const [index, name] of names.entries()) if (header[index] === null && name !== '') ignored.add(name)
        if (!names.includes(required)) throw new ImportFileError(`the header has no ${required} column (it has: ${names.join(', ')})`)
        const repeated = names.find((name, index) => header![index] !== null && names.indexOf(name) !== index)
        if (repeated) throw new ImportFileError(`the header names ${repeated} twice`)
        continue
      }
      if (record.length !== header.length) {
        yield { line, values: {}, error: new InputError('invalid_line', 'line', `the line has ${record.length} fields, the header ${header.length}`) }
        continue
      }
      const values: Partial<Record<Column, string>> = {}
      for (const [index, column] of header.entries()) {
        const value = record[index]!.trim()
        if (column !== null && value !== '') values[column] = value
      }
      yield { line, values }
    }
  } catch (error) {
    // A file csv-parse cannot read further (an unclosed quote): what came before it stands.
    const code = (error as { code?: string }).code
    if (typeof code === 'string' && code.startsWith('CSV_')) throw new ImportFileError(`the file is not valid CSV: ${(error as Error).message}`)
    throw error
  } finally {
    parser.destroy()
  }
  if (!header) throw new ImportFileError('the file is empty: it needs a header line naming its columns')
}

async function * jsonLines<Column extends string>(input: Readable, { columns }: ReadOptions<Column>, ignored: Set<string>): AsyncGenerator<FileLine<Column>> {
  const known = new Set<string>(columns)
  let number = 0
  for await (const text of createInterface({ input, crlfDelay: Infinity })) {
    number++
    // A byte-order mark before the first line is not part of it.
    const line = number === 1 && text.startsWith('\uFEFF') ? text.slice(1) : text
    if (line.trim() === '') continue
    let object: unknown
    try {
      object = JSON.parse(line)
    } catch (error) {
      yield { line: number, values: {}, error: new InputError('invalid_line', 'line', `the line is not JSON: ${(error as Error).message}`) }
      continue
    }
    if (typeof object !== 'object' || object === null || Array.isArray(object)) {
      yield { line: number, values: {}, error: new InputError('invalid_line', 'line', 'the line is not a JSON object') }
      continue
    }
    const values: Partial<Record<Column, string>> = {}
    let bad: string | undefined
    for (const [name, value] of Object.entries(object)) {
      const column = name.trim().toLowerCase()
      if (!known.has(column)) {
        ignored.add(column)
        continue
      }
      if (value === null) continue
      // A number past 2^53 has already lost digits (an id 9007199254740993 reads as ...992).
      if ((typeof value !== 'string' && typeof value !== 'number') || (typeof value === 'number' && Number.isInteger(value) && !Number.isSafeInteger(value))) {
        bad = column
        break
      }
      const text = String(value).trim()
      if (text !== '') values[column as Column] = text
    }
    if (bad) yield { line: number, values: {}, error: new InputError('invalid_parameter', bad, `${bad} must be a string or a number (an integer past 2^53 as a string: JSON numbers that long lose digits)`) }
    else yield { line: number, values }
  }
}

/**
 * Writes a file's rows in chunks of `size`, one chunk at a time and in order, while the next ones
 * are being read and checked (the two share the machine's cores rather than taking turns); up to
 * `depth` full chunks wait for their write before a push waits. A failed write is thrown at the
 * next wait or by `done`, and the chunks queued after it are not written.
 */
export class ChunkWriter<Row> {
  #chunk: Row[] = []
  // The last chunk's write; each starts once the one before it has succeeded.
  #writing: Promise<void> = Promise.resolve()
  // Writes not yet waited for, oldest first.
  #queued: Array<Promise<void>> = []

  /** `depth`: chunks that may wait for their write (besides the one being gathered) before a push waits. */
  constructor(
    private readonly size: number,
    private readonly write: (rows: Row[]) => Promise<void>,
    private readonly depth = 1,
  ) {}

  /** Gathers a row; when that fills a chunk, the promise to wait for before pushing more (else nothing to wait for: no promise a row). */
  push(row: Row): Promise<void> | undefined {
    this.#chunk.push(row)
    return this.#chunk.length >= this.size ? this.flush() : undefined
  }

  /** Queues what is gathered to be written once the writes before it have succeeded; waits while more than `depth` are queued. */
  async flush(): Promise<void> {
    if (this.#chunk.length === 0) return
    const rows = this.#chunk
    this.#chunk = []
    this.#writing = this.#writing.then(() => this.write(rows))
    this.#writing.catch(() => {})
    this.#queued.push(this.#writing)
    // A failed write fails the wait (and every write queued after it, which does not run).
    while (this.#queued.length > this.depth) await this.#queued.shift()
  }

  /** Writes what is left and waits for every write. */
  async done(): Promise<void> {
    await this.flush()
    await this.#writing
  }

  /** Waits for the writes queued, whatever their outcome (after a failure none runs): before the session is given up. */
  settled(): Promise<void> {
    return this.#writing.catch(() => {})
  }
}
