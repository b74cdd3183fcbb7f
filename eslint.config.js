// Lint (npm test runs it): neostandard, the config Fastify's own repositories use, with TypeScript.
// Generated code (the Prisma client, the client's OpenAPI types) is left out. Where this code base
// differs from standard on purpose, the rule is set here with the reason.
import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    ignores: ['src/generated/**', 'client/src/schema.ts', 'client/dist/**', 'dist/**', 'data/**', '.tap/**', 'coverage/**'],
  }),
  {
    rules: {
      // The code base's layout from its first commit (no space before a function's parentheses,
      // trailing commas in multi-line literals); reformatting every file buys nothing.
      '@stylistic/space-before-function-paren': ['error', { anonymous: 'always', named: 'never', asyncArrow: 'always' }],
      '@stylistic/comma-dangle': ['error', 'always-multiline'],
      // Database columns, query parameters and API fields are snake_case by contract.
      camelcase: 'off',
      // A TypeBox schema and its Static<> type share a name (`Conversion`): the library's own idiom.
      // TypeScript reports a real redeclaration itself.
      '@typescript-eslint/no-redeclare': 'off',
      // SQL is written in template literals, so that its own quotes need no escapes.
      '@stylistic/quotes': ['error', 'single', { avoidEscape: true, allowTemplateLiterals: true }],
      // `void promise` marks a promise deliberately not awaited (background flushes, batch writes).
      'no-void': ['error', { allowAsStatement: true }],
    },
  },
  {
    // Tests spell unreplaced macros such as '${payout}' as plain strings on purpose.
    files: ['test/**'],
    rules: { 'no-template-curly-in-string': 'off' },
  },
]
