// The summary's pre-aggregates (src/rollups.ts): folds the changes of every instance into them in
// the background, one instance at a time. Stops before the store closes.
import fp from 'fastify-plugin'
import { RollupFolder } from '../src/rollups.ts'

export default fp(
  async function rollupsPlugin(app) {
    const folder = new RollupFolder(app.prisma, {
      intervalMs: app.config.ROLLUP_FOLD_INTERVAL_MS,
      onError: (error) => {
        app.metrics.databaseErrors.inc({ operation: 'rollup_fold' })
        app.log.warn({ err: error }, 'folding changes into the summary rollups failed; the summary stays exact, and slower, until a fold succeeds')
      },
      onRecovered: () => app.log.info('folding changes into the summary rollups works again'),
    })
    app.addHook('onReady', async () => folder.start())
    app.addHook('preClose', () => folder.stop())
  },
  { name: 'rollups', dependencies: ['config', 'db', 'metrics'] },
)
