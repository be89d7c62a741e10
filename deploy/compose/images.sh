#!/usr/bin/env bash
# Build the local stand-in images (no image registry is reachable from these machines):
#   motcua-local/debian:bookworm      debootstrap --variant=minbase, docker import
#   motcua-local/python:3.11-bookworm Debian's Python 3.11 (base of deploy/Dockerfile)
#   motcua-local/kafka:4.3.1          Kafka broker jars from Maven Central on Debian's Java 17
#   motcua-local/ferretdb:1.24.2-idfilter FerretDB (MongoDB wire protocol): the `mongo` service
#   motcua-local/mailpit:1.33.1       Mailpit built from the Go module proxy
#   motcua-local/prometheus:0.316.0   } only with --monitoring (the compose `monitoring` profile)
#   motcua-local/alertmanager:0.35.0  }
# Each image carries the hash of its declared inputs (its directory under deploy/compose/images,
# the versions and build recipes of what goes into it, the base's key) as the label motcua.inputs.
# That hash is computed before anything is built: an image whose label matches is kept, and its
# binaries, jars or root filesystem are not even built, so a fresh clone on a machine whose engine
# already holds the images takes seconds.
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

key() { sha256sum | cut -c1-16; }

hash_dir() {   # dir -> every file's path, mode and content
  (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum && find . -type f -perm -u+x | LC_ALL=C sort)
}

build_base() {
  [ "$(image_label "$BASE")" = "$BASE_KEY" ] && return 0
  command -v debootstrap >/dev/null || { echo "images.sh: debootstrap missing (apt-get install debootstrap)" >&2; exit 1; }
  local rootfs=$CACHE/rootfs-$DEBIAN_SUITE start
  start=$(date +%s)
  log "debootstrap $DEBIAN_SUITE (about 30-60 s)"
  rm -rf "$rootfs"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" http://deb.debian.org/debian \
    >"$CACHE/logs/debootstrap.log" 2>&1 || { tail -20 "$CACHE/logs/debootstrap.log" >&2; exit 1; }
  # security updates too, like the official Debian images; no apt caches in the image
  printf 'deb http://deb.debian.org/debian %s main\ndeb http://deb.debian.org/debian %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$DEBIAN_SUITE" "$DEBIAN_SUITE" "$DEBIAN_SUITE" > "$rootfs/etc/apt/sources.list"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" --numeric-owner -c . | docker import --change "LABEL motcua.inputs=$BASE_KEY" \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' - "$BASE" >/dev/null
  rm -rf "$rootfs"
  log "imported $BASE ($(( $(date +%s) - start )) s)"
}
# the base's key: the suite and the recipe above
BASE_KEY=$({ echo "$DEBIAN_SUITE"; declare -f build_base; } | key)

image_key() {   # name extra-inputs -> the key of images/<name> on the base with these inputs
  { echo "$BASE_KEY"; hash_dir "$ROOT/deploy/compose/images/$1"; printf '%s\n' "$2"; } | key
}

build_image() {   # name tag key [src dest]...: the build context, then `docker build` labelled key
  local name=$1 tag=$2 want=$3; shift 3
  local ctx=$CACHE/ctx/$name start
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -r "$ROOT/deploy/compose/images/$name/." "$ctx/"
  rm -f "$ctx/pom.xml"
  while [ $# -gt 0 ]; do
    cp -r "$1" "$ctx/$2"; shift 2
  done
  log "building $tag"
  start=$(date +%s)
  docker build -q --build-arg "BASE_IMAGE=$BASE" --label "motcua.inputs=$want" -t "$tag" "$ctx" \
    >"$CACHE/logs/image-$name.log" 2>&1 || { tail -30 "$CACHE/logs/image-$name.log" >&2; exit 1; }
  rm -rf "$ctx"
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
  local bin=$LOCAL_CACHE/bin/ferretdb-$FERRETDB_BUILD
  if [ ! -x "$bin" ]; then
    bin=$CACHE/local/bin/ferretdb-$FERRETDB_BUILD
    if [ ! -x "$bin" ]; then
      log "building FerretDB $FERRETDB_BUILD"
      (exec 9>"$CACHE/build-ferretdb.lock"; flock 9
       # the command line, not a module's function: where the build lives in shared/dev may move
       [ -x "$bin" ] || (cd "$ROOT" && MOTCUA_CACHE_DIR=$CACHE/local nice "$PY" -m shared.dev.localstack provision) >&2)
    fi
  fi
  echo "$bin"
}

stand_in() {   # name tag extra-inputs producer: build unless the engine has it with these inputs
  local name=$1 tag=$2 want; want=$(image_key "$1" "$3")
  [ "$(image_label "$tag")" = "$want" ] && return 0
  build_base
  "$4" "$name" "$tag" "$want"
}
plain() { build_image "$1" "$2" "$3"; }
with_kafka_libs() { build_image "$1" "$2" "$3" "$(kafka_libs)" libs; }
with_ferretdb() { build_image "$1" "$2" "$3" "$(ferretdb_bin)" ferretdb; }
with_go_bin() {   # the binary of the same name from deploy/compose/build-bins.sh
  bash deploy/compose/build-bins.sh "$1"
  local v; v=$(sed -n "s/^${1^^}_VERSION=//p" deploy/compose/versions.env)
  build_image "$1" "$2" "$3" "$CACHE/bin/$1-$v" "$1"
}
go_recipe() { bash deploy/compose/build-bins.sh --recipe "$1"; }

stand_in python "motcua-local/python:3.11-$DEBIAN_SUITE" "" plain
stand_in kafka "motcua-local/kafka:$KAFKA_VERSION" "KAFKA_VERSION=$KAFKA_VERSION" with_kafka_libs
# the binary of shared.dev.provision's build_ferretdb: FERRETDB_VERSION with its patch (docs/ferretdb.md)
stand_in ferretdb "motcua-local/ferretdb:${FERRETDB_BUILD#v}" "FERRETDB_BUILD=$FERRETDB_BUILD" with_ferretdb
stand_in mailpit "motcua-local/mailpit:${MAILPIT_VERSION#v}" "$(go_recipe mailpit)" with_go_bin
if [ "$monitoring" = 1 ]; then
  stand_in prometheus "motcua-local/prometheus:${PROMETHEUS_VERSION#v}" "$(go_recipe prometheus)" with_go_bin
  stand_in alertmanager "motcua-local/alertmanager:${ALERTMANAGER_VERSION#v}" "$(go_recipe alertmanager)" with_go_bin
fi

# wheels for deploy/Dockerfile: the lock's exact files (hashes checked), downloaded by the host's pip
# (which trusts the host's CA bundle), so the image build needs no network; kept per lock in a
# machine-wide cache, which a fresh clone copies instead of asking pip again
wheels=$ROOT/deploy/wheels
stamp=$wheels/.lock-sha256
lock_sum=$(sha256sum "$ROOT/deploy/requirements.lock" | cut -c1-64)
shared_wheels=${MOTCUA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/motcua/wheels}/${lock_sum:0:16}
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  rm -f "$wheels"/*.whl "$stamp"
  if [ ! -f "$shared_wheels/.complete" ]; then
    log "downloading the wheels of deploy/requirements.lock"
    rm -rf "$shared_wheels.tmp.$$"; mkdir -p "$shared_wheels.tmp.$$"
    "$PY" -m pip download -q --disable-pip-version-check --require-hashes -r "$ROOT/deploy/requirements.lock" \
      -d "$shared_wheels.tmp.$$" --only-binary=:all: --python-version 3.11 --implementation cp \
      --abi cp311 --abi abi3 --abi none --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux_2_28_x86_64 --platform any >"$CACHE/logs/wheels.log" 2>&1 \
      || { tail -20 "$CACHE/logs/wheels.log" >&2; exit 1; }
    touch "$shared_wheels.tmp.$$/.complete"
    rm -rf "$shared_wheels"; mv "$shared_wheels.tmp.$$" "$shared_wheels"
  fi
  mkdir -p "$wheels"
  cp "$shared_wheels"/*.whl "$wheels/"
  echo "$lock_sum" > "$stamp"
fi

cat > "$CACHE/local.env" <<ENV
# written by deploy/compose/images.sh: the local stand-in images (docker-compose.yml variables)
KAFKA_IMAGE=motcua-local/kafka:$KAFKA_VERSION
MONGO_IMAGE=motcua-local/ferretdb:${FERRETDB_BUILD#v}
MAILPIT_IMAGE=motcua-local/mailpit:${MAILPIT_VERSION#v}
PROMETHEUS_IMAGE=motcua-local/prometheus:${PROMETHEUS_VERSION#v}
ALERTMANAGER_IMAGE=motcua-local/alertmanager:${ALERTMANAGER_VERSION#v}
PYTHON_IMAGE=motcua-local/python:3.11-$DEBIAN_SUITE
MOTCUA_IMAGE=motcua-local/motcua:0.1.0
ENV
