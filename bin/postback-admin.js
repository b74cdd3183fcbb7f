#!/usr/bin/env node
// The postback-admin command. Runs the TypeScript source through tsx where tsx is installed (a
// development checkout), and the built JavaScript in dist/ otherwise (a production install).
let cli
try {
  const { register } = await import('tsx/esm/api')
  register()
  cli = await import('../src/cli.ts')
} catch (error) {
  if (error?.code !== 'ERR_MODULE_NOT_FOUND' || !String(error.message).includes("'tsx")) throw error
  cli = await import('../dist/src/cli.js')
}
process.exitCode = await cli.run(process.argv.slice(2))
