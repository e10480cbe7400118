#!/usr/bin/env bash
# Provision and run a project-local PostgreSQL + TimescaleDB cluster on Debian/Ubuntu.
#
#   boot/timescaledb.sh install   # make sure postgres + the timescaledb extension exist
#   boot/timescaledb.sh start     # install if needed, init the cluster, start it (idempotent)
#   boot/timescaledb.sh stop
#   boot/timescaledb.sh status
#   boot/timescaledb.sh url       # print the DATABASE_URL of the local cluster
#   boot/timescaledb.sh replica start|stop|status|drop|url
#                                 # a streaming replica of that cluster (pg_basebackup -R), for
#                                 # DATABASE_READ_URLS: its own data directory and port
#
# Settings (environment): LOCAL_DB_DIR (default .data/pg), LOCAL_DB_PORT (default 54329),
# LOCAL_DB_NAME (default analytics), LOCAL_DB_REPLICA_DIR (default .data/pg-replica),
# LOCAL_DB_REPLICA_PORT (default 54330).
#
# When DATABASE_URL or POSTGRES_HOST is set, the project uses that database and this script
# is not needed (the Makefile skips it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA_DIR="${LOCAL_DB_DIR:-$ROOT/.data/pg}"
PORT="${LOCAL_DB_PORT:-54329}"
DB_NAME="${LOCAL_DB_NAME:-analytics}"
LOG_FILE="$DATA_DIR/../postgres-$PORT.log"
BUILD_DIR="${LOCAL_DB_BUILD_DIR:-$ROOT/.data/build}"
REPLICA_DIR="${LOCAL_DB_REPLICA_DIR:-$ROOT/.data/pg-replica}"
REPLICA_PORT="${LOCAL_DB_REPLICA_PORT:-54330}"
REPLICA_LOG="$REPLICA_DIR/../postgres-$REPLICA_PORT.log"
REPLICA_SLOT="analytics_replica_$REPLICA_PORT"
# The most WAL the primary keeps for a replica that is stopped or behind (max_slot_wal_keep_size).
REPLICA_MAX_WAL="${LOCAL_DB_REPLICA_MAX_WAL:-8GB}"

say() { printf '[timescaledb] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

check_platform() {
  if [ "$(uname -s)" != "Linux" ] || ! command -v apt-get >/dev/null 2>&1; then
    die "this script provisions PostgreSQL on Debian/Ubuntu only. On this machine, run the
database with Docker Compose instead ('docker compose up', see README.md), or point
DATABASE_URL at an existing PostgreSQL with the timescaledb extension."
  fi
}

# Newest PostgreSQL major version whose server binaries are installed.
pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

apt_updated=0
apt_install() {
  say "installing system packages: $* (needed to $INSTALL_REASON)"
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  if [ -z "$(pg_bindir)" ]; then
    INSTALL_REASON="run a local PostgreSQL server"
    apt_install postgresql postgresql-contrib
    # Debian's package starts a system cluster on 5432; we only want the binaries.
    as_root systemctl disable --now postgresql >/dev/null 2>&1 || true
  fi
  [ -n "$(pg_bindir)" ] || die "PostgreSQL server binaries not found after install"
}

pg_version() { basename "$(dirname "$(pg_bindir)")"; }

extension_installed() {
  local sharedir
  sharedir="/usr/share/postgresql/$(pg_version)/extension"
  [ -f "$sharedir/timescaledb.control" ]
}

# The first configured Debian mirror, from the machine's own apt sources (deb822 or classic).
apt_mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    uri=$(grep -rhoE '^URIs: *[a-z]+://[^ ]+' /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}')
  fi
  echo "$uri"
}

ensure_extension() {
  extension_installed && return 0
  local v
  v=$(pg_version)
  # Ubuntu and some Debian releases ship a binary package: try it first.
  if apt-cache show "postgresql-$v-timescaledb" >/dev/null 2>&1; then
    INSTALL_REASON="add the timescaledb extension to PostgreSQL $v"
    apt_install "postgresql-$v-timescaledb" && extension_installed && return 0
  fi
  INSTALL_REASON="build the timescaledb extension from Debian's source package"
  apt_install "postgresql-server-dev-$v" cmake libssl-dev gcc make xz-utils dpkg-dev
  local mirror
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || die "no apt mirror found in /etc/apt/sources.list*; cannot fetch the timescaledb source"
  mkdir -p "$BUILD_DIR/lists/partial"
  local src="$BUILD_DIR/sources.list"
  # A private source list: the machine's apt configuration is left untouched.
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg opts=""
  [ -f "$keyring" ] && opts="[signed-by=$keyring] "
  echo "deb-src $opts$mirror trixie main" >"$src"
  local aptopts=(-o "Dir::Etc::sourcelist=$src" -o Dir::Etc::sourceparts=/nonexistent
                 -o "Dir::State::Lists=$BUILD_DIR/lists" -o APT::Sandbox::User=root)
  say "fetching the timescaledb source package from the configured Debian mirror"
  apt-get "${aptopts[@]}" update -qq
  (cd "$BUILD_DIR" && apt-get "${aptopts[@]}" source --download-only -qq timescaledb)
  local tarball
  tarball=$(ls "$BUILD_DIR"/timescaledb_*.orig.tar.* | sort -V | tail -n1)
  [ -n "$tarball" ] || die "timescaledb source tarball not found"
  rm -rf "$BUILD_DIR/src" && mkdir -p "$BUILD_DIR/src"
  tar -xf "$tarball" -C "$BUILD_DIR/src" --strip-components=1
  say "building timescaledb (Apache-2 edition) for PostgreSQL $v; about a minute on 2 cores"
  (cd "$BUILD_DIR/src" && export GIT_CEILING_DIRECTORIES="$BUILD_DIR" &&
    ./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
      -DUSE_TELEMETRY=OFF -DPG_CONFIG="/usr/lib/postgresql/$v/bin/pg_config" >/dev/null &&
    make -C build -j"$(nproc)" >/dev/null &&
    as_root make -C build install >/dev/null)
  extension_installed || die "timescaledb build finished but the extension is not installed"
  say "timescaledb installed"
}

# Run a PostgreSQL binary as the cluster owner (initdb refuses root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

is_running() { is_running_in "$DATA_DIR"; }

# Whether the server of data directory $1 runs.
is_running_in() {
  local dir=$1
  [ -f "$dir/postmaster.pid" ] || return 1
  as_owner "$(pg_bindir)/pg_ctl" -D "$dir" status >/dev/null 2>&1 || return 1
  # pg_ctl only asks whether the recorded pid is alive. After a crash (and a reboot) that pid
  # may belong to an unrelated process; a postmaster runs with its data directory as cwd.
  local pid cwd
  pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cwd=$(readlink -f "/proc/$pid/cwd" 2>/dev/null) || return 0  # cannot tell: trust pg_ctl
  [ "$cwd" = "$(readlink -f "$dir")" ]
}

init_cluster() {
  [ -f "$DATA_DIR/PG_VERSION" ] && return 0
  say "initialising a local cluster in $DATA_DIR"
  mkdir -p "$DATA_DIR"
  # Only the data directory changes hands (LOCAL_DB_DIR may sit in a folder that is not ours).
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DATA_DIR"; fi
  chmod 700 "$DATA_DIR"
  as_owner "$(pg_bindir)/initdb" -D "$DATA_DIR" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
}

cmd_install() {
  check_platform
  ensure_postgres
  ensure_extension
}

cmd_start() {
  cmd_install
  init_cluster
  if is_running; then
    say "already running on port $PORT"
  else
    # A crash can leave postmaster.pid behind; pg_ctl status said it is not running.
    rm -f "$DATA_DIR/postmaster.pid"
    if [ "$(id -u)" -eq 0 ]; then touch "$LOG_FILE" && chown postgres: "$LOG_FILE"; fi
    as_owner "$(pg_bindir)/pg_ctl" -D "$DATA_DIR" -l "$LOG_FILE" -w -t 60 -o \
      "-p $PORT -k $DATA_DIR -c listen_addresses=127.0.0.1 -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off -c max_connections=200 -c synchronous_commit=on -c shared_buffers=512MB -c work_mem=32MB -c max_locks_per_transaction=256" \
      start >/dev/null || { tail -n 20 "$LOG_FILE" >&2; die "PostgreSQL did not start"; }
    say "started on 127.0.0.1:$PORT (log: $LOG_FILE)"
  fi
  if ! as_owner "$(pg_bindir)/psql" -h "$DATA_DIR" -p "$PORT" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='$DB_NAME'" postgres | grep -q 1; then
    as_owner "$(pg_bindir)/createdb" -h "$DATA_DIR" -p "$PORT" -U postgres "$DB_NAME"
  fi
}

cmd_stop() {
  if [ -z "$(pg_bindir)" ] || [ ! -f "$DATA_DIR/PG_VERSION" ]; then say "no local cluster"; return 0; fi
  if is_running; then
    as_owner "$(pg_bindir)/pg_ctl" -D "$DATA_DIR" -m fast -w stop >/dev/null
    say "stopped"
  else
    say "not running"
  fi
}

cmd_status() {
  if [ -n "$(pg_bindir)" ] && [ -f "$DATA_DIR/PG_VERSION" ] && is_running; then
    say "running on 127.0.0.1:$PORT, data in $DATA_DIR"
  else
    say "not running"; return 3
  fi
}

cmd_url() { echo "postgresql://postgres@127.0.0.1:$PORT/$DB_NAME"; }

# --- the streaming replica ---------------------------------------------------------------
# A physical copy of the whole cluster on 127.0.0.1:$REPLICA_PORT, kept up to date by streaming
# replication from the cluster on $PORT. The primary needs nothing beyond what initdb set up:
# wal_level=replica and max_wal_senders=10 are PostgreSQL's defaults, and initdb's pg_hba.conf
# (-A trust) already lets local replication connections in. A replication slot keeps the WAL the
# replica still needs (a copy of a big cluster takes minutes, during which a busy primary
# recycles its WAL), bounded by max_slot_wal_keep_size=$REPLICA_MAX_WAL on the primary (set with
# ALTER SYSTEM and a reload, only when it is unlimited): a replica stopped for longer than that
# much WAL loses its slot and is copied again on its next start. `replica drop` removes both.

replica_psql() {
  as_owner "$(pg_bindir)/psql" -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d postgres -tAqc "$1"
}

replica_streaming() {
  [ "$(replica_psql "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null)" = "streaming" ]
}

primary_psql() {
  as_owner "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAqc "$1"
}

drop_slot() {
  primary_psql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$REPLICA_SLOT' AND NOT active" >/dev/null
}

replica_make() {
  local tmp="$REPLICA_DIR.partial"
  if [ "$(primary_psql "SHOW max_slot_wal_keep_size")" = "-1" ]; then
    say "bounding the WAL the primary keeps for replication slots: max_slot_wal_keep_size = $REPLICA_MAX_WAL (ALTER SYSTEM, reload)"
    primary_psql "ALTER SYSTEM SET max_slot_wal_keep_size = '$REPLICA_MAX_WAL'" >/dev/null
    primary_psql "SELECT pg_reload_conf()" >/dev/null
  fi
  drop_slot
  say "copying the cluster on port $PORT into $REPLICA_DIR (pg_basebackup)"
  rm -rf "$tmp"
  mkdir -p "$(dirname "$REPLICA_DIR")"
  mkdir -p "$tmp"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$tmp"; fi
  chmod 700 "$tmp"
  # -R: standby.signal and primary_conninfo; -X stream: the WAL of the copy comes along;
  # -c fast: checkpoint now rather than waiting for the next one.
  as_owner "$(pg_bindir)/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -D "$tmp" -R -X stream -c fast \
    -C -S "$REPLICA_SLOT" \
    || { rm -rf "$tmp"; die "pg_basebackup from 127.0.0.1:$PORT failed (is the cluster running?)"; }
  mv "$tmp" "$REPLICA_DIR"   # only a complete copy gets the real name
}

replica_launch() {
  rm -f "$REPLICA_DIR/postmaster.pid"
  if [ "$(id -u)" -eq 0 ]; then touch "$REPLICA_LOG" && chown postgres: "$REPLICA_LOG"; fi
  # A hot standby must allow at least as many connections and locks as its primary (see
  # cmd_start). hot_standby_feedback: long reads (an export) are not cancelled by the
  # primary's vacuum of rows they still need.
  # -t 600: a copy taken while the primary was busy replays minutes of WAL before it opens.
  as_owner "$(pg_bindir)/pg_ctl" -D "$REPLICA_DIR" -l "$REPLICA_LOG" -w -t 600 -o \
    "-p $REPLICA_PORT -k $REPLICA_DIR -c listen_addresses=127.0.0.1 -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off -c max_connections=200 -c max_locks_per_transaction=256 -c shared_buffers=256MB -c work_mem=32MB -c hot_standby=on -c hot_standby_feedback=on" \
    start >/dev/null
}

# Wait for the replica to stream from the primary: up to $1 seconds, and as long again while it
# is still replaying the WAL its copy came with (minutes, after a copy taken while the primary
# was busy). 1 if it cannot (the WAL or slot it needs is gone) or did not in time.
replica_wait_streaming() {
  local i last="" now
  for ((i = 0; i < $1 * 2; i++)); do
    replica_streaming && return 0
    if grep -qE "has already been removed|replication slot .* does not exist|slot has been invalidated|can no longer get changes" \
        "$REPLICA_LOG" 2>/dev/null; then return 1; fi
    now=$(replica_psql "SELECT pg_last_wal_replay_lsn()" 2>/dev/null || true)
    if [ "$now" != "$last" ] && [ "$i" -gt 0 ]; then i=0; fi  # still replaying: wait on
    last=$now
    sleep 0.5
  done
  return 1
}

cmd_replica_start() {
  cmd_install
  as_owner "$(pg_bindir)/pg_isready" -h 127.0.0.1 -p "$PORT" -q \
    || die "the primary on 127.0.0.1:$PORT is not running (boot/timescaledb.sh start)"
  if is_running_in "$REPLICA_DIR"; then
    say "replica already running on port $REPLICA_PORT"
    return 0
  fi
  local fresh=0
  if [ ! -f "$REPLICA_DIR/standby.signal" ]; then
    rm -rf "$REPLICA_DIR"; replica_make; fresh=1
  fi
  : >"$REPLICA_LOG" 2>/dev/null || true
  if ! replica_launch || ! replica_wait_streaming 60; then
    as_owner "$(pg_bindir)/pg_ctl" -D "$REPLICA_DIR" -m fast -w stop >/dev/null 2>&1 || true
    [ "$fresh" -eq 0 ] || { tail -n 20 "$REPLICA_LOG" >&2; die "the replica did not start streaming"; }
    # Stopped for long: the primary recycled the WAL it needs. Copy the cluster again.
    say "the replica cannot catch up from its old copy; making it again"
    rm -rf "$REPLICA_DIR"; replica_make
    : >"$REPLICA_LOG"
    { replica_launch && replica_wait_streaming 60; } || { tail -n 20 "$REPLICA_LOG" >&2; die "the replica did not start streaming"; }
  fi
  say "replica streaming from port $PORT on 127.0.0.1:$REPLICA_PORT (log: $REPLICA_LOG)"
}

cmd_replica_stop() {
  if [ -z "$(pg_bindir)" ] || [ ! -f "$REPLICA_DIR/PG_VERSION" ]; then say "no replica"; return 0; fi
  if is_running_in "$REPLICA_DIR"; then
    as_owner "$(pg_bindir)/pg_ctl" -D "$REPLICA_DIR" -m fast -w stop >/dev/null
    say "replica stopped"
  else
    say "replica not running"
  fi
}

cmd_replica_drop() {
  cmd_replica_stop
  drop_slot 2>/dev/null || true
  rm -rf "$REPLICA_DIR" "$REPLICA_DIR.partial"
  say "replica removed (data directory and replication slot)"
}

cmd_replica_status() {
  if [ -n "$(pg_bindir)" ] && [ -f "$REPLICA_DIR/PG_VERSION" ] && is_running_in "$REPLICA_DIR"; then
    local info
    # (one line: as_owner goes through sh -c, which takes no multi-line quoting)
    info=$(replica_psql "SELECT coalesce((SELECT status FROM pg_stat_wal_receiver), 'not streaming') || ', replay ' || CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 'caught up' ELSE coalesce(round(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::numeric, 1)::text, '?') || ' s behind' END" 2>/dev/null || echo "not answering")
    say "replica running on 127.0.0.1:$REPLICA_PORT (from port $PORT): $info"
  else
    say "replica not running"; return 3
  fi
}

cmd_replica() {
  case "${1:-}" in
    start) cmd_replica_start ;;
    stop) cmd_replica_stop ;;
    status) cmd_replica_status ;;
    drop) cmd_replica_drop ;;
    url) echo "postgresql://postgres@127.0.0.1:$REPLICA_PORT/$DB_NAME" ;;
    *) echo "usage: $0 replica {start|stop|status|drop|url}" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop; cmd_start ;;
  status) cmd_status ;;
  url) cmd_url ;;
  replica) cmd_replica "${2:-}" ;;
  *) echo "usage: $0 {install|start|stop|restart|status|url|replica start|stop|status|drop|url}" >&2; exit 2 ;;
esac
