# postback-store container image. .ci/run follows this file's steps (the build stage's RUN lines and
# the runtime stage's COPY --from=build lines) in a clean copy of the tree, since CI has no Docker
# engine: keep each RUN on one line and each step meaningful outside Docker too.
ARG NODE_VERSION=24

# Build: install every dependency without running install scripts (none is needed, and Prisma's
# would download engines), generate the Prisma client offline (`npm run generate` sets
# PRISMA_SCHEMA_ENGINE_BINARY), compile to dist/, then drop the dev dependencies.
FROM node:${NODE_VERSION}-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY prisma.config.ts tsconfig.json tsconfig.build.json ./
COPY prisma ./prisma
COPY src ./src
COPY plugins ./plugins
COPY bin ./bin
RUN npm run generate && npm run build
# --omit=optional too: the Prisma CLI and TypeScript are optional peers of @prisma/client, which
# --omit=dev alone keeps (about 250 MB); the only other optional package is pg's Cloudflare socket.
RUN npm prune --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund

# Runtime: the built JavaScript and production dependencies only, run as the unprivileged `node` user.
FROM node:${NODE_VERSION}-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATA_DIR=/data
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
# `postback-admin` on PATH (docker exec ... postback-admin migrate); the embedded store's folder, owned by `node`.
RUN ln -s /app/bin/postback-admin.js /usr/local/bin/postback-admin && mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 3000
# No curl in the slim image: Node's fetch asks /readyz (200 once the database answers).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself, and shuts down cleanly (answers what is queued).
CMD ["node", "dist/src/server.js"]
