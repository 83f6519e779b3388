# Shared by up.sh, down.sh, test.sh, bench.sh.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${COHORTBRIDGE_HOME:-$REPO/.local}"
RUN_DIR="$HOME_DIR/run"
LOG_DIR="$HOME_DIR/logs"
CONFIGURATION="${CONFIGURATION:-Release}"
PG_PORT="${COHORTBRIDGE_PG_PORT:-54329}"
AMQP_PORT="${COHORTBRIDGE_AMQP_PORT:-56729}"
MGMT_PORT="${COHORTBRIDGE_MGMT_PORT:-56731}"
ADMIN_TOKEN="${PLATFORM_ADMIN_TOKEN:-dev-admin-token}"
SERVICE_TOKEN="${PLATFORM_SERVICE_TOKEN:-dev-service-token}"
# name:port:database-key
SERVICES=(KeyService:5081:Keys ImportGateway:5080:Gateway CohortService:5082:Cohorts SegmentService:5083:Segments)

say() { printf '==> %s\n' "$*"; }
docker_engine() { command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; }
