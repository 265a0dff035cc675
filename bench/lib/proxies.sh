# bench/lib/proxies.sh — sourced by bench/run: start_proxy, which starts one system under test
# on core 1 with a configuration equivalent to nginx's (see bench/README.md).
#
#   start_proxy SYSTEM [MODE] [UPSTREAM_PORT]
#
# MODE is `http1` (the default: HTTP/1.1 keep-alive proxying, the published configuration),
# `h2` (the same, listening for HTTP/2 without TLS, prior knowledge, as h2load speaks it) or
# `stream` (WebSocket upgrades and Server-Sent Events passed through unbuffered, long
# timeouts, room for STREAM_CONNECTIONS connections: as many as the file-descriptor limit allows,
# at most 30,000). UPSTREAM_PORT defaults to the shared nginx upstream.
# Sets PROXY_PID, PROXY_URL (…/api/bench/hello), PROXY_PORT and PROXY_LOG.

start_proxy() {
  local system="$1" mode="${2:-http1}" up="${3:-$UP_PORT}" port
  port="$(free_port)"
  PROXY_PORT=$port
  PROXY_URL="http://127.0.0.1:$port/api/bench/hello"
  # The readiness probe speaks what the listener speaks (wait_ready and the check below).
  CURL_PROTO=()
  [[ $mode == h2 ]] && CURL_PROTO=(--http2-prior-knowledge)
  # A stream-mode upstream (bench/loadgen's) may not be listening yet, or answers with an
  # endless event stream: wait for the route then (any answer but 404; Traefik listens before
  # its routes are loaded), not for a 2xx.
  local ready_url="$PROXY_URL"
  [[ $mode == stream ]] && ready_url="route:$PROXY_URL"
  case "$system" in
    nginx | nginx-cache)
      local cache_zone="" cache_use=""
      if [[ $system == nginx-cache ]]; then
        # nginx's workers drop root (to nobody): they must reach and write the cache store.
        mkdir -p "$TMP/nginx-cache-store"
        chmod 711 "$TMP"
        chmod 777 "$TMP/nginx-cache-store"
        cache_zone="  proxy_cache_path $TMP/nginx-cache-store levels=1:2 keys_zone=bench_cache:10m max_size=64m inactive=10m use_temp_path=off;"
        cache_use="      proxy_cache bench_cache;
      proxy_cache_valid 200 60s;
      proxy_cache_lock on;
      add_header X-Cache \$upstream_cache_status;"
      fi
      local listen_opts="" connection="proxy_set_header Connection \"\";" stream_zone="" connections=4096
      [[ $mode == h2 ]] && listen_opts=" http2"
      if [[ $mode == stream ]]; then
        # WebSocket upgrades pass (Connection: upgrade only when the client asked for one),
        # event streams are not buffered, and an idle stream is not timed out.
        stream_zone="  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }"
        connection="proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      proxy_buffering off;
      proxy_read_timeout 1h;"
        # 30,000 whatever the open-file limit: nginx stops accepting while fewer than an eighth
        # of its worker_connections are free, so a limit sized to the descriptors would refuse
        # WebSockets the descriptors still have room for.
        connections=30000
      fi
      start_nginx "$system-proxy" 1 "$cache_zone$stream_zone
  upstream bench_upstream {
    server 127.0.0.1:$up;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$port$listen_opts;
    location /api/bench/ {
      proxy_pass http://bench_upstream/;
      proxy_http_version 1.1;
      $connection
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$host;
$cache_use
    }
  }" "$connections"
      PROXY_PID=$NGINX_PID
      PROXY_LOG="$TMP/$system-proxy/logs/error.log"
      wait_ready "$ready_url" "$PROXY_PID" "nginx proxy" "$PROXY_LOG"
      ;;
    sluice | sluice-nometrics | sluice-3 | sluice-auth | sluice-limit | sluice-redis | sluice-all | sluice-cache)
      local dir="$TMP/$system" upstreams="\"http://127.0.0.1:$up\"" auth="" limit="enabled = false" metrics="true" cache="enabled = false"
      local log_level="warn" access_log="false" max_connections=10000 idle_timeout="60s"
      # Room for 10,000 bridged WebSockets, and an idle one is not timed out.
      [[ $mode == stream ]] && max_connections=$STREAM_CONNECTIONS && idle_timeout="1h"
      local cache_route=""
      # Every request carries the bench's bearer token, which nginx's proxy_cache ignores:
      # the route shares answers between callers so sluice may cache them too.
      [[ $system == sluice-cache ]] && cache="enabled = true
default_ttl = \"60s\"" && cache_route="[[routes]]
path = \"/api/bench\"
service = \"bench\"
strip_prefix = true
cache = { ttl = \"60s\", allow_credentials = true }"
      [[ $system == sluice-nometrics ]] && metrics="false"
      [[ $system == sluice-limit ]] && limit="max = 1000000000"
      [[ $system == sluice-redis ]] && limit="max = 1000000000
redis_url = \"redis://127.0.0.1:$REDIS_PORT\""
      [[ $system == sluice-3 ]] &&
        upstreams="$upstreams, \"http://127.0.0.1:$UP_PORT2\", \"http://127.0.0.1:$UP_PORT3\""
      [[ $system == sluice-auth || $system == sluice-all ]] && auth="[auth]
required = true
jwt_secret = \"$BENCH_SECRET\""
      [[ $system == sluice-all ]] && limit="max = 1000000000" && log_level="info" && access_log="true"
      mkdir -p "$dir"
      cat >"$dir/sluice.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
worker_threads = 1
max_connections = $max_connections
[log]
level = "$log_level"
access_log = $access_log
$auth
[rate_limit]
$limit
[metrics]
enabled = $metrics
[cache]
$cache
[services.bench]
upstreams = [$upstreams]
idle_timeout = "$idle_timeout"
$cache_route
EOF
      PROXY_LOG="$dir/sluice.log"
      # Clean environment and a working dir of its own: no stray PORT/UPSTREAMS/.env can leak in.
      if ! (cd "$dir" && env -i PATH="$PATH" HOME="$dir" timeout 10 "$SLUICE" check --config "$dir/sluice.toml") \
        >"$dir/check.log" 2>&1; then
        cat "$dir/check.log" >&2
        die "sluice check rejected the benchmark config ($dir/sluice.toml)"
      fi
      (cd "$dir" && exec env -i PATH="$PATH" HOME="$dir" taskset -c 1 "$SLUICE" --config "$dir/sluice.toml" \
        >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "http://127.0.0.1:$port/healthz" "$PROXY_PID" "sluice" "$PROXY_LOG"
      ;;
    haproxy)
      # One process (no master), one thread; HTTP keep-alive on both sides is HAProxy's default
      # mode, with idle server connections reused (`http-reuse safe`, the default). No `log`
      # line, so no access log. X-Forwarded-For is off by default (`option forwardfor`).
      # In stream mode WebSockets pass as tunnels (HAProxy's default in mode http), idle ones
      # kept for `timeout tunnel`.
      local dir="$TMP/haproxy" bind_opts="" maxconn=4096 tunnel=""
      [[ $mode == h2 ]] && bind_opts=" proto h2"
      # (HAProxy wants two file descriptors a connection: client and server.)
      # `option http-no-delay` sends each piece of an event stream at once (as nginx's
      # `proxy_buffering off`); without it HAProxy may hold one back for the next.
      [[ $mode == stream ]] && maxconn=$((STREAM_CONNECTIONS / 2)) && tunnel="
  timeout tunnel 1h
  option http-no-delay"
      mkdir -p "$dir"
      cat >"$dir/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn $maxconn
defaults
  mode http
  timeout connect 5s
  timeout client 65s
  timeout server 65s
  timeout http-keep-alive 65s$tunnel
frontend bench
  bind 127.0.0.1:$port$bind_opts
  acl bench path_beg /api/bench/
  http-request return status 404 content-type text/plain string "not found" if !bench
  default_backend bench_upstream
backend bench_upstream
  http-request replace-path /api/bench(/.*) \1
  server up 127.0.0.1:$up
EOF
      PROXY_LOG="$dir/haproxy.log"
      haproxy -c -q -f "$dir/haproxy.cfg" >"$PROXY_LOG" 2>&1 || { cat "$PROXY_LOG" >&2; die "haproxy rejected the benchmark config ($dir/haproxy.cfg)"; }
      (exec taskset -c 1 haproxy -db -f "$dir/haproxy.cfg" >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "$ready_url" "$PROXY_PID" "haproxy" "$PROXY_LOG"
      ;;
    envoy)
      # One worker thread (--concurrency 1, plus Envoy's main thread), no admin listener, no
      # access log (none configured); upstream HTTP/1.1 connections are pooled per worker.
      # X-Forwarded-For is not appended by default (use_remote_address is off).
      # h2 and stream modes take the AUTO codec (HTTP/2 by prior knowledge or HTTP/1.1); stream
      # mode adds the WebSocket upgrade and lifts the route's 15 s response timeout, which
      # would end an event stream.
      local dir="$TMP/envoy" codec="HTTP1" upgrades="" route_timeout=""
      [[ $mode != http1 ]] && codec="AUTO"
      # Its circuit breakers (1,024 connections and requests by default) are raised to the
      # connection room the others get: each bridged WebSocket holds an upstream connection.
      local breakers=""
      [[ $mode == stream ]] && upgrades="
          upgrade_configs: [{ upgrade_type: websocket }]" && route_timeout=", timeout: 0s" && breakers="
    circuit_breakers:
      thresholds: [{ max_connections: $STREAM_CONNECTIONS, max_pending_requests: $STREAM_CONNECTIONS, max_requests: $STREAM_CONNECTIONS }]"
      mkdir -p "$dir"
      cat >"$dir/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $port } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: $codec$upgrades
          route_config:
            name: bench
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: { prefix: "/api/bench/" }
                route: { cluster: bench_upstream, prefix_rewrite: "/"$route_timeout }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: bench_upstream
    type: STATIC
    connect_timeout: 5s$breakers
    load_assignment:
      cluster_name: bench_upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $up } } }
EOF
      PROXY_LOG="$dir/envoy.log"
      (cd "$dir" && exec env HOME="$dir" taskset -c 1 "$ENVOY_BIN" -c "$dir/envoy.yaml" --concurrency 1 \
        --disable-hot-restart --log-level warn >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "$ready_url" "$PROXY_PID" "envoy" "$PROXY_LOG"
      ;;
    traefik)
      # GOMAXPROCS=1; file provider, one router with a stripPrefix middleware; access log off
      # (Traefik's default), log level ERROR; upstream keep-alive is Go's http.Transport pool
      # (Traefik's default maxIdleConnsPerHost: 200). Sets X-Forwarded-For/Proto/Host by default.
      # Stream mode turns the entry point's read and idle timeouts off (60 s and 180 s by
      # default), as the others get long ones.
      local dir="$TMP/traefik" timeouts=""
      [[ $mode == stream ]] && timeouts=", respondingTimeouts: { readTimeout: 0s, writeTimeout: 0s, idleTimeout: 0s }"
      mkdir -p "$dir"
      cat >"$dir/traefik.yml" <<EOF
global: { checkNewVersion: false, sendAnonymousUsage: false }
log: { level: ERROR }
entryPoints:
  web:
    address: "127.0.0.1:$port"
    transport: { lifeCycle: { graceTimeOut: 1s }$timeouts }
providers:
  file: { filename: "$dir/dynamic.yml", watch: false }
EOF
      cat >"$dir/dynamic.yml" <<EOF
http:
  routers:
    bench:
      entryPoints: [web]
      rule: "PathPrefix(\`/api/bench/\`)"
      middlewares: [strip-bench]
      service: bench-upstream
  middlewares:
    strip-bench:
      stripPrefix: { prefixes: ["/api/bench"] }
  services:
    bench-upstream:
      loadBalancer:
        servers:
        - url: "http://127.0.0.1:$up"
EOF
      PROXY_LOG="$dir/traefik.log"
      (cd "$dir" && exec env HOME="$dir" GOMAXPROCS=1 taskset -c 1 "$TRAEFIK_BIN" --configFile="$dir/traefik.yml" \
        >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "$ready_url" "$PROXY_PID" "traefik" "$PROXY_LOG"
      ;;
    caddy)
      # GOMAXPROCS=1; admin API off, no automatic HTTPS, no `log` directive (no access log),
      # handle_path strips /api/bench; keep-alive to the upstream with up to 64 idle
      # connections (as nginx's `keepalive 64`; Caddy's default is 32). Sets
      # X-Forwarded-For/Proto/Host by default. Its data dirs go to the run's temp dir.
      # h2 mode adds h2c to the server's protocols; stream mode flushes every write.
      local dir="$TMP/caddy" protocols="" flush=""
      [[ $mode == h2 ]] && protocols="
	servers {
		protocols h1 h2 h2c
	}"
      [[ $mode == stream ]] && flush="
			flush_interval -1"
      mkdir -p "$dir"
      cat >"$dir/Caddyfile" <<EOF
{
	admin off
	auto_https off
	persist_config off
	log {
		level ERROR
	}$protocols
}
http://127.0.0.1:$port {
	bind 127.0.0.1
	handle_path /api/bench/* {
		reverse_proxy 127.0.0.1:$up {$flush
			transport http {
				keepalive 65s
				keepalive_idle_conns_per_host 64
			}
		}
	}
}
EOF
      PROXY_LOG="$dir/caddy.log"
      (cd "$dir" && exec env HOME="$dir" XDG_DATA_HOME="$dir/data" XDG_CONFIG_HOME="$dir/config" GOMAXPROCS=1 \
        taskset -c 1 "$CADDY_BIN" run --config "$dir/Caddyfile" --adapter caddyfile >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "$ready_url" "$PROXY_PID" "caddy" "$PROXY_LOG"
      ;;
    fastify)
      # bench/fastify/gateway.js: fastify (logger off) + @fastify/http-proxy, prefix /api/bench
      # stripped, upstream keep-alive through @fastify/reply-from's undici pool. Node runs the
      # JavaScript on one thread. No X-Forwarded-For (not @fastify/http-proxy's default).
      # Stream mode turns on @fastify/http-proxy's WebSocket support (WEBSOCKET=1) and lifts
      # the upstream pool's cap of 128 connections (each open event stream holds one). The
      # gateway speaks HTTP/1.1 only, as the seed's did: no h2 mode.
      [[ $mode == h2 ]] && die "the Fastify gateway has no HTTP/2 listener"
      local dir="$TMP/fastify" websocket=0 upstream_connections=128
      [[ $mode == stream ]] && websocket=1 && upstream_connections=$STREAM_CONNECTIONS
      mkdir -p "$dir"
      PROXY_LOG="$dir/fastify.log"
      (cd "$FASTIFY_DIR" && exec env -i PATH="$PATH" HOME="$dir" NODE_ENV=production WEBSOCKET=$websocket UPSTREAM_CONNECTIONS=$upstream_connections \
        taskset -c 1 node gateway.js "$port" "http://127.0.0.1:$up" >"$PROXY_LOG" 2>&1) &
      PROXY_PID=$!
      PIDS+=("$PROXY_PID")
      wait_ready "$ready_url" "$PROXY_PID" "fastify gateway" "$PROXY_LOG"
      ;;
  esac
  [[ $mode == stream ]] && return 0
  local body
  body="$(curl -s "${CURL_PROTO[@]+"${CURL_PROTO[@]}"}" --max-time 2 -H "Authorization: Bearer $BENCH_TOKEN" "$PROXY_URL" || true)"
  if [[ $body != "hello from upstream" ]]; then
    log "$system at $PROXY_URL answered: $(printf '%q' "${body:0:200}")"
    tail -n 20 "$PROXY_LOG" >&2 || true
    die "$system does not proxy /api/bench/hello to the upstream"
  fi
}

