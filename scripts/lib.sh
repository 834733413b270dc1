# shellcheck shell=bash disable=SC2034 # URL_* and VENV are read by the sourcing scripts
# Shared helpers for scripts/*. Source it; it defines functions and a few variables only.
#
#   REPO   the repository root (absolute)
#   LOCAL  $REPO/.local — everything a script creates at run time lives here (git-ignored)

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
LOCAL="$REPO/.local"
VENV="$LOCAL/venv"

log()  { printf '%s\n' "$*" >&2; }
info() { printf '  %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# demo_login ROLE FILE
# Prints "EMAIL PASSWORD TOTP_SECRET" of that role's login in `coherency seed-demo` output
# (a line "role email password", for staff followed by "authenticator app: otpauth://…" and
# "a code now: …/coherency totp-code SECRET"; the secret is empty for a login without one).
demo_login() {
  awk -v r="$1" '
    $1 == r && !e { e = $2; p = $3; next }
    e && /totp-code/ { print e, p, $NF; done = 1; exit }
    e && $1 != "authenticator" { print e, p, ""; done = 1; exit }
    END { if (e && !done) print e, p, "" }' "$2"
}

# ---------------------------------------------------------------------------------------------
# URLs

# parse_url URL DEFAULT_PORT
# Sets URL_SCHEME URL_USER URL_PASS URL_HOST URL_PORT URL_PATH URL_QUERY.
# Assumes user info is percent-encoded (no raw '/', '?' or '@' in passwords). For a host
# list (mongodb://a:1,b:2/...) URL_HOST/URL_PORT describe the first host and URL_HOSTS
# holds the whole list.
parse_url() {
  local url=$1 default_port=$2 rest authority hostport
  URL_SCHEME=${url%%://*}
  rest=${url#*://}
  URL_QUERY=""
  if [[ $rest == *\?* ]]; then URL_QUERY=${rest#*\?}; rest=${rest%%\?*}; fi
  authority=${rest%%/*}
  URL_PATH=${rest#"$authority"}
  URL_PATH=${URL_PATH#/}
  URL_USER="" URL_PASS=""
  if [[ $authority == *@* ]]; then
    local auth=${authority%@*}
    hostport=${authority##*@}
    URL_USER=${auth%%:*}
    [[ $auth == *:* ]] && URL_PASS=${auth#*:}
  else
    hostport=$authority
  fi
  URL_HOSTS=$hostport
  hostport=${hostport%%,*}
  if [[ $hostport == \[* ]]; then                  # [::1]:5432
    URL_HOST=${hostport%%]*}; URL_HOST=${URL_HOST#[}
    URL_PORT=${hostport#*]}; URL_PORT=${URL_PORT#:}
  elif [[ $hostport == *:* ]]; then
    URL_HOST=${hostport%%:*}; URL_PORT=${hostport##*:}
  else
    URL_HOST=$hostport; URL_PORT=""
  fi
  [[ -n $URL_HOST ]] || URL_HOST=127.0.0.1
  [[ -n $URL_PORT ]] || URL_PORT=$default_port
}

# Loopback hosts are the only ones a script may start a service for.
is_loopback() {
  case $1 in
    127.*|localhost|::1|'[::1]') return 0 ;;
    *) return 1 ;;
  esac
}

# The address a private server should bind for a URL host.
bind_addr() {
  case $1 in
    localhost) echo 127.0.0.1 ;;
    *) echo "$1" ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# Network

# tcp_open HOST PORT — true when something accepts a TCP connection (2 s bound).
tcp_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for SECONDS DESCRIPTION COMMAND... — retry COMMAND every 0.25 s until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  while ((SECONDS < deadline)); do
    "$@" && return 0
    sleep 0.25
  done
  "$@" && return 0
  warn "$what did not answer within ${secs}s"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Processes we start: one pid file per service in $LOCAL/run/NAME.pid

pid_file() { echo "$LOCAL/run/$1.pid"; }

# pid_alive PIDFILE PATTERN — true when the pid file names a live process whose command
# line contains PATTERN (guards against a recycled pid).
pid_alive() {
  local file=$1 pattern=$2 pid
  [[ -s $file ]] || return 1
  pid=$(head -n1 "$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

# stop_pid NAME PATTERN — TERM the process in NAME's pid file, wait up to 20 s, then KILL.
stop_pid() {
  local name=$1 pattern=$2 file pid
  file=$(pid_file "$name")
  if ! pid_alive "$file" "$pattern"; then
    [[ -e $file ]] && { info "$name: pid file was stale; removed"; rm -f "$file"; }
    return 0
  fi
  pid=$(head -n1 "$file")
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name (pid $pid) ignored SIGTERM for 20s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  info "$name: stopped (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
# Packages

APT_UPDATED=${APT_UPDATED:-}
apt_install() {
  have apt-get || die "need to install $* but apt-get is not available; install it by hand"
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    have sudo || die "need root (or sudo) to apt-get install $*"
    sudo="sudo"
  fi
  if [[ -z $APT_UPDATED ]]; then
    log "apt-get update"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

# ensure_venv [PIP_REQUIREMENT...] — create $VENV if missing and pip install what is missing.
# A requirement is installed only when `pip show NAME` fails or, for NAME==VERSION, the
# installed version differs.
ensure_venv() {
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating Python venv $VENV"
    mkdir -p "$LOCAL"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv
      python3 -m venv "$VENV" || die "python3 -m venv failed"
    fi
  fi
  local req name want have_ver missing=()
  for req in "$@"; do
    name=${req%%[=<>!~]*}
    want=""
    [[ $req == *==* ]] && want=${req#*==}
    have_ver=$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [[ -z $have_ver ]] || [[ -n $want && $have_ver != "$want" ]]; then
      missing+=("$req")
    fi
  done
  if ((${#missing[@]})); then
    log "pip install ${missing[*]} (into $VENV)"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2 \
      || die "pip install ${missing[*]} failed"
  fi
}
