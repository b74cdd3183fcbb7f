// The management API: keys and roles, conversions, summaries, diagnostics.
import { runArea } from './area.ts'

runArea(import.meta.url)
