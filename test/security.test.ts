// Sheet secrets, address allow-lists, secrets kept out of output.
import { runArea } from './area.ts'

runArea(import.meta.url)
