// The management API: keys and roles, conversions, diagnostics (the feed, summaries and
// reconciliation are in test/reporting/).
import { runArea } from './area.ts'

runArea(import.meta.url)
