#!/usr/bin/env bash
# make down: stops exactly what make up started (the four services, then our PostgreSQL and RabbitMQ); keeps data.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
for entry in "${SERVICES[@]}"; do
  IFS=: read -r name _ _ <<< "$entry"
  pidfile="$RUN_DIR/$name.pid"
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    say "$name stopped"
  fi
  rm -f "$pidfile"
done
"$REPO/scripts/infra.sh" stop
