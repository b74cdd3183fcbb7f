// Recovery: kill -9 under load loses no acknowledged delivery, and the data folder's lock after a crash.
import { runArea } from './area.ts'

runArea(import.meta.url)
