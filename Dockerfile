# ferry: one image for the API and the worker fleet.
#   API:    node dist/api/main.js     (default CMD)
#   Worker: node dist/worker/main.js  (set by docker-compose.yml)
#
# --ignore-scripts: dependency install scripts are not needed (msgpackr falls
# back to pure JS; the prebuilt msgpackr-extract binaries are optional deps and
# still load at runtime), and it keeps the build from running arbitrary code.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: install all deps (incl. TypeScript, esbuild) and compile to dist/;
#      the API's and the worker's entry points are bundled (bundle.mjs) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app

# Lockfile first so the dependency layer is cached until it changes.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund

COPY tsconfig.json tsconfig.build.json bundle.mjs ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY runner ./runner
RUN npm run build

# ---- runtime: production deps + compiled JS only ----
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# Application files stay root-owned (read-only for the runtime user).
COPY --from=build /app/dist ./dist
# The web page is served from source files (no build step).
COPY api/web ./api/web

# Download target. Created here, owned by node, so that an empty named volume
# mounted on it inherits this ownership on first use.
RUN mkdir -p /data/downloads && chown -R node:node /data

# In a container the API must listen on all interfaces (the app defaults to
# 127.0.0.1, which would be unreachable through a published port).
ENV HOST=0.0.0.0 \
    PORT=3000 \
    DOWNLOAD_DIR=/data/downloads

USER node
EXPOSE 3000

# Exec form with node itself as the process (not npm), so SIGTERM from
# `docker stop` reaches the app's graceful-shutdown handler.
CMD ["node", "dist/api/main.js"]
