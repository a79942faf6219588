#!/usr/bin/env bash
# Bring up the local PostgreSQL server the test suite uses (127.0.0.1:5432, role postgres,
# no password): install it with apt-get when it is missing and we are root (a fresh CI
# machine), create and start a cluster, and let the postgres role connect over loopback.
# Each test session creates and drops its own throwaway database, so no other database or
# role is needed.
#
# Without ZEROSERVE_REQUIRE_SERVICES=1 a server that cannot be brought up is reported and the
# PostgreSQL tests skip; with it (CI) this script fails, as those tests would.
set -uo pipefail

PG_URL="postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRE="${ZEROSERVE_REQUIRE_SERVICES:-0}"
PG_LIB="${PG_LIB:-/usr/lib/postgresql}" # Debian's layout; overridable to test this script
PG_ETC="${PG_ETC:-/etc/postgresql}"

say() { echo "services: $*"; }
give_up() {
  say "$*"
  if [ "$REQUIRE" = 1 ]; then
    say "ZEROSERVE_REQUIRE_SERVICES=1: failing"
    exit 1
  fi
  say "PostgreSQL: down (its tests will skip)"
  exit 0
}
is_root() { [ "$(id -u)" = 0 ]; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
pg_login() { psql "$PG_URL" -w -qAtc 'select 1' >/dev/null 2>&1; }

install_postgres() {
  is_root || give_up "PostgreSQL is not installed; run: sudo apt-get install -y postgresql"
  command -v apt-get >/dev/null 2>&1 || give_up "PostgreSQL is not installed and apt-get is missing"
  say "installing PostgreSQL (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null ||
    give_up "apt-get install postgresql failed"
}

# The newest installed server version, and its cluster "main" (created if absent).
ensure_cluster() {
  local version
  version="$(find "$PG_LIB" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null |
    sort -V | tail -1)"
  [ -n "$version" ] || give_up "no PostgreSQL server under $PG_LIB"
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$version main"; then
    is_root || give_up "no PostgreSQL $version cluster; run: sudo pg_createcluster $version main"
    say "creating cluster $version/main"
    pg_createcluster "$version" main -p 5432 >/dev/null || give_up "pg_createcluster failed"
  fi
  CLUSTER_VERSION="$version"
}

# Debian asks loopback TCP clients for a password; the tests connect without one. On a
# machine we administer (root), let the postgres role in from 127.0.0.1 only.
allow_loopback_login() {
  local hba="$PG_ETC/$CLUSTER_VERSION/main/pg_hba.conf"
  is_root && [ -f "$hba" ] || give_up "cannot log in as $PG_URL; allow it in pg_hba.conf"
  grep -q '^# zeroserve tests' "$hba" && give_up "cannot log in as $PG_URL (see $hba)"
  say "allowing role postgres from 127.0.0.1 without a password ($hba)"
  { printf '# zeroserve tests: role postgres from loopback, no password\n'
    printf 'host all postgres 127.0.0.1/32 trust\n'
    cat "$hba"; } >"$hba.new" && mv "$hba.new" "$hba"
  chown postgres:postgres "$hba" 2>/dev/null || true
  pg_ctlcluster "$CLUSTER_VERSION" main reload || give_up "reloading PostgreSQL failed"
}

wait_up() {
  for _ in $(seq 1 150); do
    pg_up && return 0
    sleep 0.2
  done
  return 1
}

if ! pg_up; then
  command -v pg_ctlcluster >/dev/null 2>&1 || install_postgres
  ensure_cluster
  say "starting PostgreSQL $CLUSTER_VERSION/main"
  pg_ctlcluster --skip-systemctl-redirect "$CLUSTER_VERSION" main start 2>&1 || true
  wait_up || give_up "PostgreSQL did not start (pg_lsclusters: $(pg_lsclusters -h 2>&1))"
fi
if ! pg_login; then
  CLUSTER_VERSION="$(pg_lsclusters -h 2>/dev/null | awk '$3 == 5432 {print $1; exit}')"
  [ -n "$CLUSTER_VERSION" ] || give_up "cannot log in as $PG_URL"
  allow_loopback_login
  for _ in $(seq 1 50); do pg_login && break; sleep 0.2; done
  pg_login || give_up "cannot log in as $PG_URL after allowing it"
fi
say "PostgreSQL: up ($PG_URL)"
