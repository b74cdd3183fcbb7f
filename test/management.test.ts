// The management API: keys and roles, conversions, diagnostics (the feed, summaries and
// reconciliation: the reporting area).
import { runArea } from './area.ts'

runArea(import.meta.url)
