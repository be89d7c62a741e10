#!/usr/bin/env bash
# Build the Go binaries the local stand-in images and the engine need, from the Go module proxy,
# into a cache (once per version): the compose plugin, Mailpit, Prometheus, Alertmanager.
# FerretDB and the Kafka jars come from deploy/local (shared.dev.localstack provision).
#   bash deploy/compose/build-bins.sh [compose|mailpit|prometheus|alertmanager]...   (default: all)
#   bash deploy/compose/build-bins.sh --recipe NAME     what NAME's build depends on (images.sh's key)
# Cache: $MOTCUA_COMPOSE_CACHE (default deploy/compose/.cache)/bin/<name>-<version>.
# Builds run under `nice`: the machines are shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
. deploy/compose/versions.env

CACHE=${MOTCUA_COMPOSE_CACHE:-$PWD/deploy/compose/.cache}
BIN=$CACHE/bin
mkdir -p "$BIN" "$CACHE/logs"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
GO=${GO:-go}

log() { echo "[build-bins $(date +%T)] $*" >&2; }

# a throwaway module to resolve a module at a version without `go install` (which refuses modules
# whose go.mod has replace/exclude directives)
throwaway() {   # name -> prints the directory
  local dir=$CACHE/gomod-$1
  mkdir -p "$dir"
  [ -f "$dir/go.mod" ] || (cd "$dir" && "$GO" mod init "motcua.local/build-$1" >/dev/null 2>&1)
  echo "$dir"
}

# module source copied out of the read-only module cache (to add files a release tarball carries)
module_copy() {   # module version dest
  local dir
  dir=$(cd "$(throwaway src)" && GOFLAGS=-mod=mod "$GO" mod download -json "$1@$2" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$3"; cp -r "$dir" "$3"; chmod -R u+w "$3"
}

build_compose() {
  local out=$BIN/docker-compose-$COMPOSE_VERSION
  [ -x "$out" ] && return 0
  log "building the docker compose plugin $COMPOSE_VERSION (about a minute or two)"
  local dir; dir=$(throwaway compose)
  (cd "$dir" && nice "$GO" get "github.com/docker/compose/v5/cmd@$COMPOSE_VERSION" \
     && CGO_ENABLED=0 nice "$GO" build -trimpath \
          -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
          -o "$out.tmp" github.com/docker/compose/v5/cmd) >"$CACHE/logs/compose.log" 2>&1 \
    || { tail -20 "$CACHE/logs/compose.log" >&2; return 1; }
  mv "$out.tmp" "$out"
}

build_mailpit() {
  local out=$BIN/mailpit-$MAILPIT_VERSION
  [ -x "$out" ] && return 0
  log "building Mailpit $MAILPIT_VERSION"
  local dir; dir=$(throwaway mailpit)
  (cd "$dir" && nice "$GO" get "github.com/axllent/mailpit@$MAILPIT_VERSION" \
     && nice "$GO" build -trimpath \
          -ldflags "-s -w -X github.com/axllent/mailpit/config.Version=$MAILPIT_VERSION" \
          -o "$out.tmp" github.com/axllent/mailpit) >"$CACHE/logs/mailpit.log" 2>&1 \
    || { tail -20 "$CACHE/logs/mailpit.log" >&2; return 1; }
  mv "$out.tmp" "$out"
}

build_prometheus() {
  local out=$BIN/prometheus-$PROMETHEUS_VERSION
  [ -x "$out" ] && return 0
  # service discovery: DNS (scaled compose services), file and static only; leaving out the cloud
  # and Kubernetes ones (build tags of Prometheus' plugins/) leaves out most of the compile time
  log "building Prometheus $PROMETHEUS_VERSION"
  # module v0.316.0 is Prometheus 3.16.0
  local v=${PROMETHEUS_VERSION#v0.} release
  release="${v:0:1}.$((10#${v:1:2})).${v#*.}"
  local dir; dir=$(throwaway prometheus)
  (cd "$dir" && nice "$GO" get "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_VERSION" \
     && nice "$GO" build -trimpath -tags remove_all_sd,enable_dns_sd -o "$out.tmp" \
          -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
          github.com/prometheus/prometheus/cmd/prometheus) >"$CACHE/logs/prometheus.log" 2>&1 \
    || { tail -20 "$CACHE/logs/prometheus.log" >&2; return 1; }
  mv "$out.tmp" "$out"
}

build_alertmanager() {
  local out=$BIN/alertmanager-$ALERTMANAGER_VERSION
  [ -x "$out" ] && return 0
  log "building Alertmanager $ALERTMANAGER_VERSION"
  # the module ships without its built web UI (ui/web.go embeds app/dist): a placeholder page
  # lets it build; the API and the routing do not need the UI
  local src=$CACHE/alertmanager-src
  (module_copy github.com/prometheus/alertmanager "$ALERTMANAGER_VERSION" "$src" \
     && mkdir -p "$src/ui/app/dist" \
     && echo '<!doctype html><title>Alertmanager</title><p>Web UI not built; use the API (/api/v2).' \
          >"$src/ui/app/dist/index.html" \
     && cd "$src" && nice "$GO" build -trimpath -o "$out.tmp" \
          -ldflags "-s -w -X github.com/prometheus/common/version.Version=${ALERTMANAGER_VERSION#v}" \
          ./cmd/alertmanager) \
     >"$CACHE/logs/alertmanager.log" 2>&1 \
    || { tail -20 "$CACHE/logs/alertmanager.log" >&2; return 1; }
  rm -rf "$src"
  mv "$out.tmp" "$out"
}

# `--recipe NAME`: what the build of NAME depends on (its function and version), for
# images.sh's input key: an image is rebuilt only when this changes, without building the binary
if [ "${1:-}" = --recipe ]; then
  declare -f "build_$2"
  grep -i "^${2}_VERSION=" deploy/compose/versions.env
  exit 0
fi

command -v "$GO" >/dev/null || { echo "build-bins: go not found (install Go 1.24+)" >&2; exit 1; }
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(compose mailpit prometheus alertmanager)
for t in "${targets[@]}"; do
  start=$(date +%s)
  # one build per binary at a time (CI builds in the background while tests may ask too)
  exec 9>"$CACHE/build-$t.lock"
  flock 9
  "build_$t"
  exec 9>&-
  log "$t ready ($(( $(date +%s) - start )) s)"
done
