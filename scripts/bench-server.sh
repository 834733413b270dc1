# shellcheck shell=bash
# Sourced by the bench-* scripts: starts BENCH_NODES (default 1) release `coherency serve`
# processes on 127.0.0.1:$PORT, $PORT+1, … sharing one database (coherency_loadtest_<port>,
# recreated, so benchmarks on different ports never clear each other's data), Mongo
# database, Redis prefix, blob folder and secrets — one deployment of N nodes, each with its
# own node id, listen address and public URL; request, sign-in and registration rate limits
# lifted (the load is the point, and every simulated client shares one address); migrations
# (and bench_before_serve) run once; every node stopped on exit.
#
# Needs: PORT, OUT (folder for the server logs: server.log, or server-0.log … server-<N-1>.log
# for node K on PORT+K when BENCH_NODES > 1), BLOBS; optional BENCH_NODES, BENCH_SERVER_ENV
# (extra `NAME=VALUE ...` for every server only), BENCH_SERVER_BIN (another server binary,
# e.g. a baseline build; default the release build). Sets SERVER, LOADTEST, NODES,
# SERVER_PIDS (every node; SERVER_PID is node 0's), TARGETS (the nodes' URLs, comma-
# separated) and TARGET_ARGS (an array: `--target URL` per node, for loadtest); defines
# cpu_snapshot and a few bench_* helpers. Defines nothing else; a function
# bench_before_serve, if the sourcing script defines one, runs after the migrations and
# before the servers start.
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coherency/target}"
SERVER="${BENCH_SERVER_BIN:-$TARGET_DIR/release/coherency}"
LOADTEST="$TARGET_DIR/release/loadtest"
[ -x "$SERVER" ] && [ -x "$LOADTEST" ] || die "build first: cargo build --release -p coherency -p coherency-loadtest"
NODES="${BENCH_NODES:-1}"
[[ $NODES =~ ^[1-9][0-9]?$ ]] && [ "$NODES" -le 16 ] || die "BENCH_NODES must be 1..16 (got $NODES)"
mkdir -p "$OUT"

scripts/services >/dev/null
# shellcheck disable=SC1091
source "$LOCAL/services.env"
BASE_DB_URL="${COHERENCY_DATABASE_URL%/*}"
psql "$COHERENCY_DATABASE_URL" -qc "DROP DATABASE IF EXISTS coherency_loadtest_$PORT WITH (FORCE)" \
  -c "CREATE DATABASE coherency_loadtest_$PORT" >/dev/null
rm -rf "$BLOBS"

export COHERENCY_DATABASE_URL="$BASE_DB_URL/coherency_loadtest_$PORT"
export COHERENCY_MONGO_DATABASE=coherency_loadtest_$PORT
export COHERENCY_REDIS_PREFIX="loadtest-$$:"
export COHERENCY_BLOB_URL="file://$BLOBS"
export COHERENCY_HTTP_ADDR="127.0.0.1:$PORT"
export COHERENCY_PUBLIC_URL="http://127.0.0.1:$PORT"
export COHERENCY_LOG_FORMAT=json COHERENCY_LOG_LEVEL=warn
export COHERENCY_API_RATE_PER_SEC="${COHERENCY_API_RATE_PER_SEC:-100000}"
export COHERENCY_API_RATE_BURST="${COHERENCY_API_RATE_BURST:-100000}"
export COHERENCY_LOGIN_PER_ADDRESS_PER_MIN="${COHERENCY_LOGIN_PER_ADDRESS_PER_MIN:-100000}"
export COHERENCY_REGISTER_PER_ADDRESS_PER_MIN="${COHERENCY_REGISTER_PER_ADDRESS_PER_MIN:-100000}"
# Every simulated phone, browser and socket comes from 127.0.0.1.
export COHERENCY_CONNECTIONS_PER_ADDRESS="${COHERENCY_CONNECTIONS_PER_ADDRESS:-0}"
COHERENCY_TOKEN_SECRET="bench-$(head -c 24 /dev/urandom | base64 | tr -d '\n/+=')"
COHERENCY_ENCRYPTION_KEY="bench1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
export COHERENCY_TOKEN_SECRET COHERENCY_ENCRYPTION_KEY

"$SERVER" migrate >/dev/null
# A sourcing script may prepare the database first (seed-demo needs the port free).
if declare -F bench_before_serve >/dev/null; then bench_before_serve; fi

SERVER_PIDS=()
TARGET_ARGS=()
TARGETS=""
bench_server_stop() {
  local pid
  for pid in "${SERVER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${SERVER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$BLOBS"
}
trap bench_server_stop EXIT
# Node K: its own id, address, public URL and log; everything else shared (exported above).
bench_start_nodes() {
  local k node_port log
  for ((k = 0; k < NODES; k++)); do
    node_port=$((PORT + k))
    log="$OUT/server.log"
    [ "$NODES" -eq 1 ] || log="$OUT/server-$k.log"
    # shellcheck disable=SC2086
    env ${BENCH_SERVER_ENV:-} COHERENCY_NODE_ID="bench-$PORT-$k" COHERENCY_HTTP_ADDR="127.0.0.1:$node_port" \
      COHERENCY_PUBLIC_URL="http://127.0.0.1:$node_port" "$SERVER" serve >"$log" 2>&1 &
    SERVER_PIDS+=("$!")
    TARGET_ARGS+=(--target "http://127.0.0.1:$node_port")
    TARGETS="${TARGETS:+$TARGETS,}http://127.0.0.1:$node_port"
  done
}
bench_start_nodes
# shellcheck disable=SC2034 # for the sourcing scripts
SERVER_PID=${SERVER_PIDS[0]}
bench_nodes_ready() {
  local k
  for ((k = 0; k < NODES; k++)); do
    curl -fs "http://127.0.0.1:$((PORT + k))/readyz" >/dev/null 2>&1 || return 1
  done
}
for _ in $(seq $((100 + 25 * NODES))); do
  bench_nodes_ready && break
  sleep 0.2
done
bench_nodes_ready || die "servers not ready on ports $PORT..$((PORT + NODES - 1)) (see $OUT/server*.log)"

# CPU seconds used so far: every server node together, PostgreSQL, the Mongo server, and the
# whole machine (busy time of all cores, from /proc/stat; loadtest's own share is whole −
# the others).
cpu_snapshot() {
  local hz; hz=$(getconf CLK_TCK)
  ps -eo pid=,comm=,times= | awk -v srv="${SERVER_PIDS[*]}" '
    BEGIN { n = split(srv, a, " "); for (i = 1; i <= n; i++) server[a[i]] = 1 }
    $1 in server { s += $3; next }
    $2 ~ /^postgres/ { p += $3; next }
    $2 ~ /^(secantusd|mongod)/ { m += $3; next }
    END { printf "%d %d %d ", s, p, m }'
  awk -v hz="$hz" '/^cpu / { printf "%d\n", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}
