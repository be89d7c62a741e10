#!/usr/bin/env bash
# Make a Docker engine and the compose plugin answer on this machine (idempotent; root):
# - Debian's docker.io (dockerd 20.10, containerd, runc) and debootstrap from apt when missing;
# - dockerd started when no engine answers: unix socket only, published ports default to
#   127.0.0.1, log in /var/log/motcua-dockerd.log, pid in /run/motcua-dockerd.pid;
# - the compose plugin built from the Go module proxy (deploy/compose/build-bins.sh, cached) and
#   installed in ~/.docker/cli-plugins when `docker compose` is missing.
#   bash deploy/compose/engine.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/compose/versions.env
CACHE=${MOTCUA_COMPOSE_CACHE:-$PWD/deploy/compose/.cache}
log() { echo "[engine $(date +%T)] $*" >&2; }

answers() { timeout 10 docker info >/dev/null 2>&1; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "engine.sh: installing docker.io needs root" >&2; exit 1; }
  log "installing docker.io and debootstrap (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >"$CACHE.apt.log" 2>&1 \
    || { tail -20 "$CACHE.apt.log" >&2; exit 1; }
fi

if ! answers; then
  [ "$(id -u)" = 0 ] || { echo "engine.sh: no Docker engine answers and starting dockerd needs root" >&2; exit 1; }
  log "starting dockerd"
  # a dockerd left over without a working socket would hold its pid file
  if [ -f /run/motcua-dockerd.pid ] && kill -0 "$(cat /run/motcua-dockerd.pid)" 2>/dev/null; then
    log "dockerd $(cat /run/motcua-dockerd.pid) runs but does not answer yet"
  else
    nohup dockerd --host unix:///var/run/docker.sock --ip 127.0.0.1 \
      >>/var/log/motcua-dockerd.log 2>&1 </dev/null &
    echo $! > /run/motcua-dockerd.pid
  fi
  for _ in $(seq 60); do answers && break; sleep 1; done
  answers || { tail -20 /var/log/motcua-dockerd.log >&2; echo "engine.sh: dockerd did not answer within 60 s" >&2; exit 1; }
fi
log "engine: $(docker version --format '{{.Server.Version}}')"

if ! docker compose version >/dev/null 2>&1; then
  bash deploy/compose/build-bins.sh compose
  mkdir -p "$HOME/.docker/cli-plugins"
  cp "$CACHE/bin/docker-compose-$COMPOSE_VERSION" "$HOME/.docker/cli-plugins/docker-compose.tmp"
  mv "$HOME/.docker/cli-plugins/docker-compose.tmp" "$HOME/.docker/cli-plugins/docker-compose"
fi
log "compose: $(docker compose version --short)"
