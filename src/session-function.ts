// A statement with a signature (Statement.signature, src/database.ts) as a PL/pgSQL function of the
// session: its definition and its call. A module of its own, without the store's drivers, so that the
// bench's floor (bench/floor.ts), which loads none of the app, runs its statement the same way.
import type { Statement } from './database.ts'

type SessionStatement = Pick<Statement, 'name' | 'signature' | 'text'>

/** The session function of a statement with a signature (CREATE OR REPLACE: a second run changes nothing). */
export function functionDefinition({ name, signature, text }: SessionStatement): string {
  // RETURNS TABLE's columns are variables of the function; its queries mean the tables' columns.
  return `
    CREATE OR REPLACE FUNCTION pg_temp.${name}(${signature!.parameters.join(', ')}) RETURNS TABLE (${signature!.returns})
    LANGUAGE plpgsql ${(signature!.settings ?? []).map((setting) => `SET ${setting}`).join(' ')} AS $function$
    #variable_conflict use_column
    ${signature!.declare ? `DECLARE ${signature!.declare}` : ''}
    BEGIN
      ${signature!.body ?? `RETURN QUERY ${text};`}
    END
    $function$`
}

/** The call of a statement's session function, with the statement's parameters. */
export function functionCall({ name, values }: Pick<Statement, 'name' | 'values'>): string {
  return `SELECT * FROM pg_temp.${name}(${values.map((_, index) => `$${index + 1}`).join(', ')})`
}
