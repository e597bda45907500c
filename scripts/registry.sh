#!/usr/bin/env bash
# A real OCI registry on loopback - Debian's docker-registry package, the
# CNCF Distribution registry - for pushing the image and the chart during
# the local-cluster run, as a release pushes them to ghcr.io.
#
#   scripts/registry.sh up       # install (apt, once) and start it, empty
#   scripts/registry.sh down     # stop it; delete what was pushed (and release.env)
#   scripts/registry.sh status   # running or stopped, and where
#   scripts/registry.sh addr     # 127.0.0.1:PORT
#
# Plain HTTP on 127.0.0.1 only (KWS_REGISTRY_PORT, default 5055): dockerd
# treats 127.0.0.0/8 as an insecure registry by default, and helm takes
# --plain-http. Its state lives beside the local cluster's ($KWS_STATE,
# $KWS_DATA), so use it under the same lock: flock /tmp/kws.lock ...
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${KWS_REGISTRY_PORT:-5055}
ADDR=127.0.0.1:$PORT
STATE=${KWS_STATE:-/run/kws}
DATA=${KWS_DATA:-/var/lib/kws}
STORE=$DATA/registry
PIDFILE=$STATE/registry.pid
CONFIG=$STATE/registry.yml

log() { printf '==> [registry %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'registry: %s\n' "$*" >&2; exit 1; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

install() {
  command -v docker-registry >/dev/null 2>&1 && return
  [ "$(id -u)" -eq 0 ] || die "docker-registry is missing: run as root to apt-get install it"
  log "apt-get install docker-registry"
  apt-get update -qq
  # The package's own service (all interfaces, port 5000) is not wanted:
  # the registry runs only as started below.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker-registry >/dev/null
}

up() {
  install
  if running; then
    log "already running on $ADDR (pid $(cat "$PIDFILE"))"
    return
  fi
  mkdir -p "$STATE" "$STORE"
  cat >"$CONFIG" <<EOF
version: 0.1
log:
  level: warn
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $STORE
  delete:
    enabled: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  log "starting docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') on $ADDR"
  setsid docker-registry serve "$CONFIG" >"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -fsS "http://$ADDR/v2/" >/dev/null 2>&1; then
      log "ready: http://$ADDR/v2/"
      return
    fi
    running || break
    sleep 0.2
  done
  tail -n 20 "$STATE/registry.log" >&2 || true
  die "the registry did not answer on http://$ADDR/v2/ (log: $STATE/registry.log)"
}

down() {
  if running; then
    local pid
    pid=$(cat "$PIDFILE")
    log "stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE" "$CONFIG" "$STATE/release.env"
  rm -rf "$STORE" "$STATE/release-dist"
}

status() {
  if running; then
    echo "registry: running on $ADDR (pid $(cat "$PIDFILE"))"
  else
    echo "registry: stopped"
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  addr) echo "$ADDR" ;;
  *) die "usage: $0 up|down|status|addr" ;;
esac
