#!/usr/bin/env bash
# `docker compose` on docker-compose.yml with the local stand-in images selected
# (deploy/compose/.cache/local.env, written by deploy/compose/images.sh) and .env:
#   bash deploy/compose/dc.sh ps | logs -f sla-worker | down | up -d --scale sla-worker=3 | …
# Variables set in the environment win over both files (COMPOSE_PROJECT_NAME, ports, images).
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${MOTCUA_COMPOSE_CACHE:-$PWD/deploy/compose/.cache}
args=()
# later files win: the stand-in images over .env's image lines
[ -f .env ] && args+=(--env-file .env)
[ -f "$CACHE/local.env" ] && args+=(--env-file "$CACHE/local.env")
exec docker compose --project-directory "$PWD" -f docker-compose.yml "${args[@]}" "$@"
