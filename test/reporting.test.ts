// Reading the stored conversions back in bulk: the change feed (and the client's follow), the
// summary and its rollups, reconciliation against a network's export. Split from the management
// area on 2026-12-01: on PGlite that one process had grown to about 4 minutes under CI's load, at
// the per-file timeout (.taprc), and was killed there once.
import { runArea } from './area.ts'

runArea(import.meta.url)
