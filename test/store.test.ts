// The store: failures and outages, migrations, postback-admin.
import { runArea } from './area.ts'

runArea(import.meta.url)
