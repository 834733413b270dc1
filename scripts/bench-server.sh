# shellcheck shell=bash
# Sourced by the bench-* scripts: starts one release `coherency serve` on 127.0.0.1:$PORT
# with its own database (coherency_loadtest_<port>, recreated, so benchmarks on different
# ports never clear each other's data), Mongo database, Redis prefix and
# blob folder; request, sign-in and registration rate limits lifted (the load is the point,
# and every simulated client shares one address); stopped on exit.
#
# Needs: PORT, OUT (folder for server.log), BLOBS; optional BENCH_SERVER_ENV (extra
# `NAME=VALUE ...` for the server only), BENCH_SERVER_BIN (another server binary, e.g. a
# baseline build; default the release build). Sets SERVER, LOADTEST, SERVER_PID; defines
# cpu_snapshot. Defines nothing else; a function bench_before_serve, if the sourcing script
# defines one, runs after the migrations and before the server starts.
TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/coherency/target}"
SERVER="${BENCH_SERVER_BIN:-$TARGET_DIR/release/coherency}"
LOADTEST="$TARGET_DIR/release/loadtest"
[ -x "$SERVER" ] && [ -x "$LOADTEST" ] || die "build first: cargo build --release -p coherency -p coherency-loadtest"
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
export COHERENCY_TOKEN_SECRET="bench-$(head -c 24 /dev/urandom | base64 | tr -d '\n/+=')"
export COHERENCY_ENCRYPTION_KEY="bench1:$(head -c 32 /dev/urandom | base64 | tr -d '\n')"

"$SERVER" migrate >/dev/null
# A sourcing script may prepare the database first (seed-demo needs the port free).
if declare -F bench_before_serve >/dev/null; then bench_before_serve; fi
# shellcheck disable=SC2086
env ${BENCH_SERVER_ENV:-} "$SERVER" serve >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
bench_server_stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$BLOBS"
}
trap bench_server_stop EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || die "server not ready (see $OUT/server.log)"

# CPU seconds used so far: this server, PostgreSQL, the Mongo server, and the whole machine
# (busy time of all cores, from /proc/stat; loadtest's own share is whole − the others).
cpu_snapshot() {
  local hz; hz=$(getconf CLK_TCK)
  ps -eo pid=,comm=,times= | awk -v srv="$SERVER_PID" '
    $1 == srv { s += $3; next }
    $2 ~ /^postgres/ { p += $3; next }
    $2 ~ /^(secantusd|mongod)/ { m += $3; next }
    END { printf "%d %d %d ", s, p, m }'
  awk -v hz="$hz" '/^cpu / { printf "%d\n", ($2 + $3 + $4 + $7 + $8) / hz }' /proc/stat
}
