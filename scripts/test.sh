#!/usr/bin/env bash
# make test: builds everything and runs every test against real PostgreSQL and RabbitMQ.
# Where no Docker engine answers, the tests use the private local servers (installed and started here when missing);
# servers this script started are stopped again at the end.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO"

started_infra=""
if [ -n "${TEST_POSTGRES:-}" ] && [ -n "${TEST_RABBITMQ_HOST:-}" ]; then
  say "using servers from TEST_POSTGRES / TEST_RABBITMQ_HOST"
elif docker_engine && [ "${TEST_NO_DOCKER:-}" != "1" ]; then
  say "Docker engine found: tests use Testcontainers"
else
  export TEST_NO_DOCKER=1
  if ! scripts/infra.sh status | grep -q "postgres: running" || ! scripts/infra.sh status | grep -q "rabbitmq: running"; then
    started_infra=1
  fi
  scripts/infra.sh start
fi
cleanup() { if [ -n "$started_infra" ] && [ -z "${KEEP_INFRA:-}" ]; then scripts/infra.sh stop || true; fi; }
trap cleanup EXIT

say "building ($CONFIGURATION)"
dotnet build Platform.sln -c "$CONFIGURATION" -nologo -clp:ErrorsOnly -v q

say "testing"
mkdir -p "$REPO/artifacts"
set +e
dotnet test Platform.sln -c "$CONFIGURATION" --no-build -nologo -m:1 --logger "console;verbosity=minimal" \
  --results-directory "$REPO/artifacts/test-results" --blame-hang-timeout 5m ${TEST_FILTER:+--filter "$TEST_FILTER"} 2>&1 \
  | tee "$REPO/artifacts/test-output.log"
status=${PIPESTATUS[0]}
set -e
sum() { grep -Eo "$1: +[0-9]+" "$REPO/artifacts/test-output.log" | awk '{s+=$2} END {print s+0}'; }
echo "$(sum Passed) passed, $(sum Failed) failed, $(sum Skipped) skipped"
if [ "$status" -eq 0 ] && [ "$(sum Passed)" -eq 0 ]; then echo "no test ran" >&2; exit 1; fi
exit "$status"
