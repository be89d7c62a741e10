#!/usr/bin/env bash
# Build the local stand-in images (no image registry is reachable from these machines):
#   motcua-local/debian:bookworm      debootstrap --variant=minbase, docker import
#   motcua-local/python:3.11-bookworm Debian's Python 3.11 (base of deploy/Dockerfile)
#   motcua-local/kafka:4.3.1          Kafka broker jars from Maven Central on Debian's Java 17
#   motcua-local/ferretdb:1.24.2      FerretDB (MongoDB wire protocol): the `mongo` service
#   motcua-local/mailpit:1.33.1       Mailpit built from the Go module proxy
#   motcua-local/prometheus:0.316.0   } only with --monitoring (the compose `monitoring` profile)
#   motcua-local/alertmanager:0.35.0  }
# An image is rebuilt only when its inputs (Dockerfile, scripts, binaries, jars) changed: each
# carries the hash of its build context as the label motcua.inputs.
#   bash deploy/compose/images.sh [--monitoring]
# Writes the variables that select these images in docker-compose.yml to deploy/compose/.cache/local.env.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. deploy/compose/versions.env
CACHE=${MOTCUA_COMPOSE_CACHE:-$ROOT/deploy/compose/.cache}
LOCAL_CACHE=${MOTCUA_CACHE_DIR:-$ROOT/deploy/local/.cache}
mkdir -p "$CACHE/ctx" "$CACHE/logs"
PY=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && PY=$ROOT/.venv/bin/python

monitoring=0
for arg in "$@"; do
  case $arg in
    --monitoring) monitoring=1 ;;
    *) echo "images.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

log() { echo "[images $(date +%T)] $*" >&2; }

BASE=motcua-local/debian:$DEBIAN_SUITE

image_label() { docker image inspect -f '{{index .Config.Labels "motcua.inputs"}}' "$1" 2>/dev/null || true; }

context_hash() {   # dir -> sha256 of every file's path, mode and content
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum && find . -type f -perm -u+x | LC_ALL=C sort) | sha256sum | cut -c1-16
}

build_base() {
  local rootfs=$CACHE/rootfs-$DEBIAN_SUITE tarball=$CACHE/debian-$DEBIAN_SUITE.tar
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "images.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
    log "debootstrap $DEBIAN_SUITE (about 30-60 s)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" http://deb.debian.org/debian \
      >"$CACHE/logs/debootstrap.log" 2>&1 || { tail -20 "$CACHE/logs/debootstrap.log" >&2; exit 1; }
    # security updates too, like the official Debian images; no apt caches in the image
    printf 'deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
      "$DEBIAN_SUITE" "$DEBIAN_SUITE" "$DEBIAN_SUITE" > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  local want; want=$(sha256sum "$tarball" | cut -c1-16)
  if [ "$(image_label "$BASE")" != "$want" ]; then
    log "importing $BASE"
    docker import --change "LABEL motcua.inputs=$want" --change 'CMD ["bash"]' \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$tarball" "$BASE" >/dev/null
  fi
}

build_image() {   # name tag [file src dest]...
  local name=$1 tag=$2; shift 2
  local ctx=$CACHE/ctx/$name
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$ROOT/deploy/compose/images/$name/." "$ctx/"
  rm -f "$ctx/pom.xml"
  while [ $# -gt 0 ]; do
    cp -r "$1" "$ctx/$2"; shift 2
  done
  # the base image's identity is an input too
  docker image inspect -f '{{.Id}}' "$BASE" > "$ctx/.base-id"
  local want; want=$(context_hash "$ctx")
  if [ "$(image_label "$tag")" = "$want" ]; then
    return 0
  fi
  log "building $tag"
  local start; start=$(date +%s)
  docker build -q --build-arg "BASE_IMAGE=$BASE" --label "motcua.inputs=$want" -t "$tag" "$ctx" \
    >"$CACHE/logs/image-$name.log" 2>&1 || { tail -30 "$CACHE/logs/image-$name.log" >&2; exit 1; }
  log "built $tag ($(( $(date +%s) - start )) s)"
}

kafka_libs() {
  local libs=$CACHE/kafka-image-$KAFKA_VERSION/libs
  if [ ! -f "$libs/.complete" ]; then
    log "downloading the Kafka $KAFKA_VERSION jars and tools from Maven Central"
    command -v mvn >/dev/null || { echo "images.sh: mvn missing (apt-get install maven)" >&2; exit 1; }
    rm -rf "$libs"
    mvn -q -B -f "$ROOT/deploy/compose/images/kafka/pom.xml" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime "-DoutputDirectory=$libs" >"$CACHE/logs/kafka-jars.log" 2>&1 \
      || { tail -20 "$CACHE/logs/kafka-jars.log" >&2; exit 1; }
    echo "$KAFKA_VERSION" > "$libs/.complete"
  fi
  echo "$libs"
}

ferretdb_bin() {
  # deploy/local's binary when it has one; else a build of our own (not in deploy/local's cache:
  # `shared.dev.localstack provision` may be building there at the same time)
  local bin=$LOCAL_CACHE/bin/ferretdb-$FERRETDB_VERSION
  if [ ! -x "$bin" ]; then
    bin=$CACHE/local/bin/ferretdb-$FERRETDB_VERSION
    if [ ! -x "$bin" ]; then
      log "building FerretDB $FERRETDB_VERSION"
      (exec 9>"$CACHE/build-ferretdb.lock"; flock 9
       [ -x "$bin" ] || MOTCUA_CACHE_DIR=$CACHE/local nice "$PY" -c \
         'from shared import localstack as l; l.build_ferretdb(l.StackConfig.from_env())' >&2)
    fi
  fi
  echo "$bin"
}

build_base
bins=(mailpit)
[ "$monitoring" = 1 ] && bins+=(prometheus alertmanager)
bash deploy/compose/build-bins.sh "${bins[@]}"
BIN=$CACHE/bin

build_image python "motcua-local/python:3.11-$DEBIAN_SUITE"
build_image kafka "motcua-local/kafka:$KAFKA_VERSION" "$(kafka_libs)" libs
build_image ferretdb "motcua-local/ferretdb:${FERRETDB_VERSION#v}" "$(ferretdb_bin)" ferretdb
build_image mailpit "motcua-local/mailpit:${MAILPIT_VERSION#v}" "$BIN/mailpit-$MAILPIT_VERSION" mailpit
if [ "$monitoring" = 1 ]; then
  build_image prometheus "motcua-local/prometheus:${PROMETHEUS_VERSION#v}" "$BIN/prometheus-$PROMETHEUS_VERSION" prometheus
  build_image alertmanager "motcua-local/alertmanager:${ALERTMANAGER_VERSION#v}" "$BIN/alertmanager-$ALERTMANAGER_VERSION" alertmanager
fi

# wheels for deploy/Dockerfile: the lock's exact files (hashes checked), downloaded by the host's pip
# (which trusts the host's CA bundle), so the image build needs no network
wheels=$ROOT/deploy/wheels
stamp=$wheels/.lock-sha256
lock_sum=$(sha256sum "$ROOT/deploy/requirements.lock" | cut -c1-64)
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  log "downloading the wheels of deploy/requirements.lock"
  rm -f "$wheels"/*.whl "$stamp"
  "$PY" -m pip download -q --disable-pip-version-check --require-hashes -r "$ROOT/deploy/requirements.lock" \
    -d "$wheels" --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any >"$CACHE/logs/wheels.log" 2>&1 \
    || { tail -20 "$CACHE/logs/wheels.log" >&2; exit 1; }
  echo "$lock_sum" > "$stamp"
fi

cat > "$CACHE/local.env" <<ENV
# written by deploy/compose/images.sh: the local stand-in images (docker-compose.yml variables)
KAFKA_IMAGE=motcua-local/kafka:$KAFKA_VERSION
MONGO_IMAGE=motcua-local/ferretdb:${FERRETDB_VERSION#v}
MAILPIT_IMAGE=motcua-local/mailpit:${MAILPIT_VERSION#v}
PROMETHEUS_IMAGE=motcua-local/prometheus:${PROMETHEUS_VERSION#v}
ALERTMANAGER_IMAGE=motcua-local/alertmanager:${ALERTMANAGER_VERSION#v}
PYTHON_IMAGE=motcua-local/python:3.11-$DEBIAN_SUITE
MOTCUA_IMAGE=motcua-local/motcua:0.1.0
ENV
