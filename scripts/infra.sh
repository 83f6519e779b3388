#!/usr/bin/env bash
# Runs CohortBridge's PostgreSQL and RabbitMQ as private background processes (no Docker needed).
# Usage: infra.sh install|start|stop|clean|status|env|vhost NAME
# Data lives in $COHORTBRIDGE_HOME (default: <checkout>/.local). Works as root and as a normal user.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOME_DIR="${COHORTBRIDGE_HOME:-$REPO/.local}"
PG_PORT="${COHORTBRIDGE_PG_PORT:-54329}"
AMQP_PORT="${COHORTBRIDGE_AMQP_PORT:-56729}"
MGMT_PORT="${COHORTBRIDGE_MGMT_PORT:-56731}"
EPMD_PORT="${COHORTBRIDGE_EPMD_PORT:-54369}"
DIST_PORT="${COHORTBRIDGE_DIST_PORT:-56730}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)}"
RMQ_BIN=/usr/lib/rabbitmq/bin

log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
sudo_cmd() { if is_root; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root or sudo to run: $*"; fi; }

mkdir -p "$HOME_DIR"

# PostgreSQL refuses to run as root: as root we run it as the 'postgres' user. That user must reach the data folder;
# when the checkout sits behind a folder it cannot enter (mktemp -d is 0700), the data goes to /var/tmp instead.
pg_dir() {
  if [ -f "$HOME_DIR/pg.location" ]; then cat "$HOME_DIR/pg.location"; return; fi
  local dir="$HOME_DIR/pg"
  if is_root && ! runuser -u postgres -- test -x "$HOME_DIR" 2>/dev/null; then
    dir="/var/tmp/cohortbridge-$(printf '%s' "$HOME_DIR" | sha1sum | cut -c1-12)/pg"
  fi
  echo "$dir" > "$HOME_DIR/pg.location"
  echo "$dir"
}
as_pg() { if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

rabbit_env() {
  local r="$HOME_DIR/rabbitmq"
  export HOME="$r/home" RABBITMQ_NODENAME="cohortbridge@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT="$DIST_PORT" ERL_EPMD_PORT="$EPMD_PORT" \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" \
    RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" \
    RABBITMQ_PID_FILE="$r/rabbitmq.pid" ERL_CRASH_DUMP="$r/log/erl_crash.dump" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
}

cmd_install() {
  local missing=()
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/postgres" ] || missing+=(postgresql)
  [ -x "$RMQ_BIN/rabbitmq-server" ] || missing+=(rabbitmq-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # policy-rc.d may deny starting the system-wide services: that is fine, we run our own.
    sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
}

pg_running() { local d; d="$(pg_dir)"; [ -f "$d/data/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d/data" status >/dev/null 2>&1; }

start_pg() {
  local d; d="$(pg_dir)"
  if pg_running; then log "PostgreSQL already running on 127.0.0.1:$PG_PORT"; return; fi
  mkdir -p "$d"
  if is_root; then chown postgres: "$d"; fi
  if [ ! -f "$d/data/PG_VERSION" ]; then
    as_pg "$PG_BIN/initdb" -D "$d/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
    # Local development and test settings; synchronous_commit=off trades the last few ms of commits on an OS crash
    # for speed, which is acceptable only here (never in deploy/).
    cat >> "$d/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$d'
max_connections = 300
shared_buffers = 2GB
max_wal_size = 8GB
synchronous_commit = off
maintenance_work_mem = 512MB
work_mem = 64MB
huge_pages = try
CONF
  fi
  reserve_huge_pages "$d/data"
  as_pg "$PG_BIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 start >/dev/null || die "PostgreSQL did not start; see $d/postgres.log"
  log "PostgreSQL running on 127.0.0.1:$PG_PORT (log: $d/postgres.log)"
}

# PostgreSQL's shared buffers on 2 MB pages (huge_pages = try, its default, uses them when the kernel has them free).
# Every backend maps the buffers it touches; with 4 kB pages that first touch is a page fault per page, which costs
# a lot on this kind of VM: a 1,000-identifier match took ~100 ms in a new backend and ~7 ms once mapped, ramping
# down over ~40 batches, in each of the ~30 backends CohortService uses (the diff path ran about twice as fast with
# huge pages). Reserving them is a kernel setting, so it is done only as root, only for the pages missing, and
# given back by `infra.sh stop`. COHORTBRIDGE_HUGE_PAGES=off skips it.
reserve_huge_pages() {
  local data="$1" f=/proc/sys/vm/nr_hugepages need free total added
  [ "${COHORTBRIDGE_HUGE_PAGES:-on}" != off ] && [ -r "$f" ] || return 0
  need="$(as_pg "$PG_BIN/postgres" -D "$data" -C shared_memory_size_in_huge_pages 2>/dev/null || echo 0)"
  [[ "$need" =~ ^[0-9]+$ ]] && [ "$need" -gt 0 ] || return 0
  free="$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)"
  [ "${free:-0}" -lt "$need" ] || return 0
  total="$(cat "$f")"
  if ! is_root || ! echo $(( total + need - free )) > "$f" 2>/dev/null; then
    log "PostgreSQL runs on 4 kB pages (about half the diff-path speed here); as root: sysctl vm.nr_hugepages=$(( total + need - free ))"
    return 0
  fi
  added=$(( $(cat "$f") - total ))
  [ "$added" -gt 0 ] || return 0
  echo $(( $(cat "$HOME_DIR/huge_pages.added" 2>/dev/null || echo 0) + added )) > "$HOME_DIR/huge_pages.added"
  log "reserved $added huge pages of 2 MB for PostgreSQL's shared buffers (vm.nr_hugepages; given back on stop)"
}

release_huge_pages() {
  local f=/proc/sys/vm/nr_hugepages added
  [ -f "$HOME_DIR/huge_pages.added" ] || return 0
  added="$(cat "$HOME_DIR/huge_pages.added")"
  local now; now="$(cat "$f")"
  echo $(( now > added ? now - added : 0 )) > "$f" 2>/dev/null || true
  rm -f "$HOME_DIR/huge_pages.added"
}

# Running = our node's process is alive and its AMQP port accepts connections. (rabbitmqctl would also tell, but it can
# take over 20 s on a loaded machine, and a wrong "not running" would start a second node on the same ports.)
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rabbit_running() {
  local pid="$HOME_DIR/rabbitmq/server.pid"
  [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && port_open "$AMQP_PORT"
}

start_rabbit() {
  local r="$HOME_DIR/rabbitmq"
  if rabbit_running; then
    log "RabbitMQ already running on 127.0.0.1:$AMQP_PORT"; return
  fi
  mkdir -p "$r/home" "$r/mnesia" "$r/log"
  cat > "$r/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users = none
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
CONF
  echo '[rabbitmq_management].' > "$r/enabled_plugins"
  (
    rabbit_env
    setsid nohup "$RMQ_BIN/rabbitmq-server" > "$r/log/console.log" 2>&1 < /dev/null &
    echo $! > "$r/server.pid"
    # await_startup waits for the node; the first CLI call may race the node's start, so retry briefly.
    for _ in $(seq 1 60); do
      if timeout 60 "$RMQ_BIN/rabbitmqctl" -q await_startup >/dev/null 2>&1; then exit 0; fi
      sleep 1
    done
    exit 1
  ) || die "RabbitMQ did not start; see $r/log/console.log"
  log "RabbitMQ running on 127.0.0.1:$AMQP_PORT (management http://127.0.0.1:$MGMT_PORT, log: $r/log)"
}

stop_rabbit() {
  local r="$HOME_DIR/rabbitmq"
  [ -f "$r/rabbitmq.pid" ] || [ -f "$r/server.pid" ] || return 0
  ( rabbit_env; timeout 60 "$RMQ_BIN/rabbitmqctl" -q shutdown >/dev/null 2>&1 || true
    # epmd outlives the node; stop ours (it listens on our private port only).
    ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1 || true )
  if [ -f "$r/server.pid" ]; then kill "$(cat "$r/server.pid")" 2>/dev/null || true; rm -f "$r/server.pid"; fi
  rm -f "$r/rabbitmq.pid"
  log "RabbitMQ stopped"
}

stop_pg() {
  local d; d="$(pg_dir)"
  if pg_running; then as_pg "$PG_BIN/pg_ctl" -D "$d/data" -m fast -w stop >/dev/null; log "PostgreSQL stopped"; fi
  release_huge_pages
}

cmd_vhost() {
  local name="${1:?vhost name}"
  ( rabbit_env
    "$RMQ_BIN/rabbitmqctl" -q add_vhost "$name" >/dev/null 2>&1 || true
    "$RMQ_BIN/rabbitmqctl" -q set_permissions -p "$name" guest '.*' '.*' '.*' >/dev/null )
}

cmd_env() {
  cat <<ENV
COHORTBRIDGE_PG=Host=127.0.0.1;Port=$PG_PORT;Username=postgres
COHORTBRIDGE_RABBITMQ_HOST=127.0.0.1
COHORTBRIDGE_RABBITMQ_PORT=$AMQP_PORT
COHORTBRIDGE_RABBITMQ_MGMT_PORT=$MGMT_PORT
ENV
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_install; start_pg; start_rabbit ;;
  stop) stop_rabbit; stop_pg ;;
  clean) stop_rabbit; stop_pg; d="$(pg_dir)"; rm -rf "$d" "$HOME_DIR/rabbitmq" "$HOME_DIR/pg.location" "$HOME_DIR/demo.txt"; log "data removed" ;;
  status) pg_running && echo "postgres: running" || echo "postgres: stopped"; rabbit_running && echo "rabbitmq: running" || echo "rabbitmq: stopped" ;;
  env) cmd_env ;;
  vhost) shift; cmd_vhost "$@" ;;
  *) echo "usage: $0 install|start|stop|clean|status|env|vhost NAME" >&2; exit 2 ;;
esac
