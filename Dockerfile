# scoreline: build the native addon and the TypeScript in one stage, run as a non-root user in the
# next. glibc (bookworm), not Alpine: the uWebSockets.js binary needs glibc.
# Every command here is one CI runs too: `npm ci` builds everything, `scoreline serve` serves.

FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json binding.gyp ./
COPY bin bin
COPY native native
COPY scripts scripts
COPY src src
COPY examples examples
RUN npm ci

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app /app
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/v2/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "bin/scoreline.js"]
CMD ["serve", "--model-repo", "examples/models", "--data-dir", "/data", "--port", "8080"]
