// The sheets' secrets and allow-lists as the receiver checks them, shared as `app.sheetSecurity`
// (src/sheet-security.ts): read at most once per sheet per SHEET_SECURITY_TTL_MS on each instance.
import fp from 'fastify-plugin'
import { SheetSecurityCache } from '../src/sheet-security.ts'

declare module 'fastify' {
  interface FastifyInstance {
    sheetSecurity: SheetSecurityCache
  }
}

export default fp(
  async function sheetSecurityPlugin(app) {
    app.decorate('sheetSecurity', new SheetSecurityCache({ query: (statement) => app.db.query(statement), ttlMs: app.config.SHEET_SECURITY_TTL_MS }))
  },
  { name: 'sheet-security', dependencies: ['db'] },
)
