// The store: opens the database the config names (PostgreSQL or the embedded PGlite), applies pending
// migrations, and shares `app.db` (and its Prisma client as `app.prisma`) with every plugin; closes
// it on app close. Named 'db' after what it decorates; plugins that use the store depend on 'db'.
// Prisma with driver adapters: https://www.prisma.io/docs/orm/overview/databases/database-drivers
import fp from 'fastify-plugin'
import { openDatabase, type Database, type PrismaClient } from '../src/database.ts'
import { migrate } from '../src/migrations.ts'

declare module 'fastify' {
  interface FastifyInstance {
    db: Database
    prisma: PrismaClient
  }
}

export default fp(
  async function dbPlugin(app) {
    const db = await openDatabase(app.config, {
      onPoolError: (error) => {
        app.metrics.databaseErrors.inc({ operation: 'pool' })
        app.log.warn({ err: error }, 'idle database connection failed')
      },
    })
    app.addHook('onClose', () => db.close())
    if (app.config.MIGRATE_ON_START) {
      const result = await db.withSession((session) => migrate(session))
      if (result.applied.length) app.log.info({ migrations: result.applied }, 'applied migrations')
    }
    app.decorate('db', db)
    app.decorate('prisma', db.prisma)
    app.log.info({ store: db.kind, location: db.location }, 'store open')
  },
  { name: 'db', dependencies: ['config', 'metrics'] },
)
