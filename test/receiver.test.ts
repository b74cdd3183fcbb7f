// The receiver: deliveries, macros and hostile input, the rejection log, test postbacks.
import { runArea } from './area.ts'

runArea(import.meta.url)
