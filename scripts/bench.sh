#!/usr/bin/env bash
# make bench: runs the benchmark console program against a running platform (make up).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$REPO"
for entry in "${SERVICES[@]}"; do
  IFS=: read -r name port _ <<< "$entry"
  curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" || { echo "$name is not running on port $port: run 'make up' first." >&2; exit 1; }
done
dotnet build bench/Benchmarks/Benchmarks.csproj -c Release -nologo -clp:ErrorsOnly -v q
export PLATFORM_ADMIN_TOKEN="$ADMIN_TOKEN" PLATFORM_SERVICE_TOKEN="$SERVICE_TOKEN"
export BENCH_BROKER_API="${BENCH_BROKER_API:-http://guest:guest@127.0.0.1:$MGMT_PORT/}"
export BENCH_POSTGRES="${BENCH_POSTGRES:-Host=127.0.0.1;Port=$PG_PORT;Username=postgres;Database=postgres}"
exec dotnet bench/Benchmarks/bin/Release/net10.0/CohortBridge.Benchmarks.dll
