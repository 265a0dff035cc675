'use strict'
// A small Fastify gateway, the Node peer in bench/run: fastify + @fastify/http-proxy, one route
// prefix forwarded to one upstream with the prefix stripped (GET /api/bench/hello -> /hello),
// pooled keep-alive connections to the upstream (@fastify/reply-from's undici agent), no logger.
//
//   node gateway.js PORT [UPSTREAM]      UPSTREAM defaults to $UPSTREAM, e.g. http://127.0.0.1:8080
//   env: HOST (127.0.0.1), PREFIX (/api/bench), WEBSOCKET (1: pass WebSocket upgrades too),
//        UPSTREAM_CONNECTIONS (128)

const fastify = require('fastify')
const proxy = require('@fastify/http-proxy')

const port = Number(process.argv[2])
const upstream = process.argv[3] || process.env.UPSTREAM
const host = process.env.HOST || '127.0.0.1'
const prefix = process.env.PREFIX || '/api/bench'

if (!Number.isInteger(port) || port <= 0 || port > 65535 || !upstream) {
  console.error('usage: node gateway.js PORT [UPSTREAM]   (or UPSTREAM=http://host:port in the environment)')
  process.exit(2)
}

const app = fastify({ logger: false })

app.register(proxy, {
  upstream,
  prefix, // stripped: /api/bench/hello is forwarded as /hello
  http2: false,
  // WEBSOCKET=1 (bench/run's stream runs) passes WebSocket upgrades through as well.
  websocket: process.env.WEBSOCKET === '1',
  // At most this many upstream connections (reply-from's default, 128, unless
  // UPSTREAM_CONNECTIONS says otherwise): each open event stream holds one.
  undici: { connections: Number(process.env.UPSTREAM_CONNECTIONS) || 128 }
})

app.get('/healthz', async () => 'ok\n')

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}

app.listen({ port, host }).catch((err) => {
  console.error(err)
  process.exit(1)
})
