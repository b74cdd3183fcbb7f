// The batch writer and the conversion lifecycle.
import { runArea } from './area.ts'

runArea(import.meta.url)
