// The service as processes: start and stop, kill -9, several instances, the data folder lock.
import { runArea } from './area.ts'

runArea(import.meta.url)
