// Sheet secrets, address allow-lists, secrets kept out of output.
// One test process for test/security/ (see .taprc); each file also runs alone: npx tap test/security/sheet-security.ts
import t from 'tap'

t.before(async () => {
  await import('./security/sheet-security.ts')
  await import('./security/sheet-security-cli.ts')
  await import('./security/receiver-url-security.ts')
  await import('./security/secrets.ts')
})
