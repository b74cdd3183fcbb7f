// The service as processes: start and stop, several instances, the change feed under concurrent writers.
import { runArea } from './area.ts'

runArea(import.meta.url)
