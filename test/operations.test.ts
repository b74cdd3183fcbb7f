// Configuration, logs, metrics, rate limits, the OpenAPI document.
import { runArea } from './area.ts'

runArea(import.meta.url)
