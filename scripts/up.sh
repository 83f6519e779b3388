#!/usr/bin/env bash
# make up: installs what is missing, starts PostgreSQL and RabbitMQ privately, migrates, starts the four services in
# the background, waits until they are ready, prints URLs, logs, the admin token and a demo partner key.
# Running it again starts only what is not running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO"
mkdir -p "$RUN_DIR" "$LOG_DIR"

command -v dotnet >/dev/null || { echo "The .NET SDK is required (dotnet on PATH)." >&2; exit 1; }
scripts/infra.sh start

say "building ($CONFIGURATION)"
dotnet build Platform.sln -c "$CONFIGURATION" -v q -nologo -clp:ErrorsOnly >/dev/null || dotnet build Platform.sln -c "$CONFIGURATION" -v q -nologo -clp:ErrorsOnly

service_env() {
  local db="$1" dbname
  dbname="cohortbridge_$(echo "$db" | tr 'A-Z' 'a-z')"
  export ASPNETCORE_ENVIRONMENT="${ASPNETCORE_ENVIRONMENT:-Development}"
  export PLATFORM_ADMIN_TOKEN="$ADMIN_TOKEN" PLATFORM_SERVICE_TOKEN="$SERVICE_TOKEN"
  export "ConnectionStrings__$db=Host=127.0.0.1;Port=$PG_PORT;Username=postgres;Database=$dbname"
  export RabbitMq__Host=127.0.0.1 RabbitMq__Port="$AMQP_PORT"
  export KeyService__BaseUrl=http://127.0.0.1:5081/ CohortService__BaseUrl=http://127.0.0.1:5082/
  export Gateway__PublicBaseUrl=http://127.0.0.1:5080/
}

dll() { echo "$REPO/services/$1/bin/$CONFIGURATION/net10.0/$1.dll"; }
alive() { [ -f "$RUN_DIR/$1.pid" ] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

for entry in "${SERVICES[@]}"; do
  IFS=: read -r name port db <<< "$entry"
  ( service_env "$db"; dotnet "$(dll "$name")" migrate > "$LOG_DIR/$name.migrate.log" 2>&1 ) \
    || { echo "Migrations of $name failed; see $LOG_DIR/$name.migrate.log" >&2; exit 1; }
done
say "migrations applied"

for entry in "${SERVICES[@]}"; do
  IFS=: read -r name port db <<< "$entry"
  if alive "$name"; then say "$name already running (pid $(cat "$RUN_DIR/$name.pid"))"; continue; fi
  (
    service_env "$db"
    export ASPNETCORE_URLS="http://0.0.0.0:$port"
    cd "$(dirname "$(dll "$name")")"
    setsid nohup dotnet "$(dll "$name")" >> "$LOG_DIR/$name.log" 2>&1 < /dev/null &
    echo $! > "$RUN_DIR/$name.pid"
  )
done

# A service with a large persisted state (SegmentService reloading a 10M-user projection) takes longer than a minute
# to report ready; the wait is bounded, says what it is waiting for, and gives up at once when the process exits.
READY_TIMEOUT="${COHORTBRIDGE_READY_TIMEOUT:-600}"
for entry in "${SERVICES[@]}"; do
  IFS=: read -r name port db <<< "$entry"
  ok=""
  started=$SECONDS
  report=$(( started + 30 ))
  while (( SECONDS - started < READY_TIMEOUT )); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; then ok=1; break; fi
    alive "$name" || break
    if (( SECONDS >= report )); then
      say "waiting for $name to be ready ($(( SECONDS - started )) s; it may be loading a large state; log: $LOG_DIR/$name.log)"
      report=$(( SECONDS + 30 ))
    fi
    sleep 0.5
  done
  if [ -z "$ok" ]; then
    if alive "$name"; then
      echo "$name did not become ready on port $port within $READY_TIMEOUT s (COHORTBRIDGE_READY_TIMEOUT). Log: $LOG_DIR/$name.log" >&2
    else
      echo "$name exited before it became ready. Log: $LOG_DIR/$name.log" >&2
    fi
    tail -n 20 "$LOG_DIR/$name.log" >&2 || true
    exit 1
  fi
done
say "all services ready"

scripts/demo-key.sh || echo "(could not create the demo partner key; see $LOG_DIR/KeyService.log)" >&2

cat <<INFO

CohortBridge is running.
  ImportGateway   http://127.0.0.1:5080   (partner API; OpenAPI at /openapi/v1.json)
  KeyService      http://127.0.0.1:5081
  CohortService   http://127.0.0.1:5082
  SegmentService  http://127.0.0.1:5083
  RabbitMQ        amqp://127.0.0.1:$AMQP_PORT  (management http://127.0.0.1:$MGMT_PORT, guest/guest)
  PostgreSQL      127.0.0.1:$PG_PORT (user postgres)
  Logs            $LOG_DIR/
  Admin token     $ADMIN_TOKEN
  Service token   $SERVICE_TOKEN  (internal endpoints; campaign services' audience reads)
$(cat "$HOME_DIR/demo.txt" 2>/dev/null || true)

Stop with: make down
INFO
