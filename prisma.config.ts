// Prisma CLI configuration. Only `prisma generate` runs here (see README: migrations are applied by
// the service's own runner), so the datasource URL is optional and never required to be set.
import { defineConfig } from 'prisma/config'

export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost/unused' },
})
