# scoreline: the native addons and the TypeScript are built in one stage; the runtime stage holds
# the production dependencies for this platform only, runs under tini as the non-root `node` user,
# and serves the bundled demo (model, feature definitions) unless given other arguments.
# glibc (bookworm), not Alpine: the uWebSockets.js binary needs glibc.
#
#   docker build -t scoreline:0.1.0 .
#   podman build --format docker -t scoreline:0.1.0 .    # podman/buildah: the default OCI format drops HEALTHCHECK
#
# The base image is pinned by digest (a tag moves; a digest is what was tested). To update it:
#   docker buildx imagetools inspect node:20-bookworm-slim     # or: skopeo inspect docker://docker.io/library/node:20-bookworm-slim
# and put the index digest it prints ("Digest: sha256:...") in NODE_IMAGE; both stages use it.
ARG NODE_IMAGE=node:20-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# A build that cannot reach the internet needs only an npm registry (a mirror: --build-arg
# NPM_CONFIG_REGISTRY=https://npm.internal/): node-gyp takes the Node headers this image ships in
# /usr/local/include/node instead of downloading them (npm_config_nodedir), better-sqlite3 is
# compiled from the SQLite source in its package instead of fetching a prebuilt binary from GitHub,
# and no install script of a dependency runs (onnxruntime-node's would download CUDA libraries).
ARG NPM_CONFIG_REGISTRY=https://registry.npmjs.org/
ENV NPM_CONFIG_REGISTRY=${NPM_CONFIG_REGISTRY} \
    npm_config_nodedir=/usr/local \
    NODE_GYP=/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js
# Dependencies and the addon's sources first: this layer is rebuilt only when they change, not on
# every edit of src/.
COPY package.json package-lock.json binding.gyp ./
COPY native native
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && (cd node_modules/better-sqlite3 && node "$NODE_GYP" rebuild --release) \
 && node "$NODE_GYP" rebuild --release
COPY tsconfig.json ./
COPY bin bin
COPY src src
COPY examples examples
COPY scripts/prune-runtime.mjs scripts/prune-runtime.mjs
# The TypeScript build, then down to what the runtime loads: production dependencies, this
# platform's binaries, no build leftovers (scripts/prune-runtime.mjs prints what it removed).
RUN node_modules/.bin/tsc -p tsconfig.json \
 && cp src/server/dashboard.html dist/src/server/dashboard.html \
 && mkdir -p dist/src/server/proto && cp src/server/proto/grpc_predict_v2.proto dist/src/server/proto/ \
 && node scripts/prune-runtime.mjs --root /app > /tmp/pruned.json \
 && node -e "const r = require('/tmp/pruned.json'); console.log('pruned ' + (r.removedBytes / 1e6).toFixed(0) + ' MB; node_modules now ' + (r.nodeModulesBytesAfter / 1e6).toFixed(0) + ' MB')"

FROM ${NODE_IMAGE}
# tini as PID 1: forwards signals to the server and reaps what retraining jobs' trainer processes
# leave behind (`docker run --init` does the same for an image without it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/build/Release/scoreline_native.node build/Release/scoreline_native.node
COPY --from=build /app/dist/src dist/src
COPY --from=build /app/bin bin
# The demo the default command serves: model repository, feature definitions, customers, config.
COPY --from=build /app/examples/scoreline.yaml examples/scoreline.yaml
COPY --from=build /app/examples/models examples/models
COPY --from=build /app/examples/features examples/features
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
# HTTP (and WebSocket, /metrics) on 8080, OIP over gRPC on 8081 (grpc.port).
EXPOSE 8080 8081
# Docker-format metadata: `podman build` keeps it only with --format docker.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/v2/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "bin/scoreline.js"]
# The demo, as `npm start` serves it: /v1/score, events and feedback work against the container.
# Other models: `docker run ... scoreline:0.1.0 serve --model-repo /models --data-dir /data`.
CMD ["serve", "--config", "examples/scoreline.yaml", "--data-dir", "/data", "--port", "8080"]
