#!/usr/bin/env bash
# The compose stack on a machine with no image registry (these machines), in one command:
# a Docker engine and the compose plugin (deploy/compose/engine.sh), the local stand-in images
# (deploy/compose/images.sh, cached), then docker-compose.yml with them, waiting until every
# container is healthy.
#   bash deploy/compose/up.sh [--monitoring] [--no-demo] [docker compose up options, e.g. --scale sla-worker=3]
# On a first start (no data volume yet) it posts `motcua demo`'s sample of dossiers, whose alert
# e-mails appear in Mailpit within seconds (--no-demo: not).
# Then: Mailpit (alert e-mails) http://127.0.0.1:8025, intake http://127.0.0.1:8001,
#       bash deploy/compose/dc.sh ps | logs | down      (docs/compose.md)
# A Docker host with internet needs none of this: `docker compose up -d --build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
monitoring=()
up_args=()
demo=1
for arg in "$@"; do
  case $arg in
    --monitoring) monitoring=(--monitoring) ;;
    --no-demo) demo=0 ;;
    *) up_args+=("$arg") ;;
  esac
done

bash deploy/compose/engine.sh
bash deploy/compose/images.sh "${monitoring[@]}"

if [ ! -f .env ]; then
  # first start: the example settings with fresh random secrets
  secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  dsecret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
  sed -e "s/^NOTIFY_SECRET=.*/NOTIFY_SECRET=$secret/" -e "s/^DASHBOARD_SECRET=.*/DASHBOARD_SECRET=$dsecret/" \
    .env.example > .env
  chmod 600 .env
  echo "up.sh: wrote .env (settings, with random NOTIFY_SECRET and DASHBOARD_SECRET)" >&2
fi

profile=()
[ ${#monitoring[@]} -gt 0 ] && profile=(--profile monitoring)
project=${COMPOSE_PROJECT_NAME:-motcua}
docker volume inspect "${project}_mongo-data" >/dev/null 2>&1 && demo=0
# one build: the six app services share the image (`up --build` would run six builds at once)
bash deploy/compose/dc.sh build intake
bash deploy/compose/dc.sh "${profile[@]}" up -d --wait --wait-timeout "${MOTCUA_COMPOSE_WAIT:-300}" "${up_args[@]}"
bash deploy/compose/dc.sh "${profile[@]}" ps
if [ "$demo" = 1 ]; then
  echo "up.sh: first start: posting a sample of dossiers (motcua demo)" >&2
  bash deploy/compose/dc.sh exec -T intake motcua demo --intake-url http://127.0.0.1:8001 --count 12
fi
setting() {   # NAME DEFAULT: the value in the environment, else in .env, else DEFAULT
  local v=${!1:-}
  [ -z "$v" ] && v=$(sed -n "s/^$1=//p" .env | tail -n1)
  echo "${v:-$2}"
}
bind=$(setting MOTCUA_BIND 127.0.0.1)
echo
echo "Alert e-mails (Mailpit):  http://$bind:$(setting MAILPIT_PORT 8025)"
echo "Intake API:               http://$bind:$(setting INTAKE_PORT 8001)"
[ ${#monitoring[@]} -gt 0 ] && echo "Prometheus:               http://$bind:$(setting PROMETHEUS_PORT 9090)"
echo "Status, logs, stop:       bash deploy/compose/dc.sh ps | logs -f | down   (docs/compose.md)"
