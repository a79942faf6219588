#!/usr/bin/env bash
# Start the local PostgreSQL and Redis servers the test suite uses, if they are down.
# Tests that need them skip when they are unreachable, unless ZEROSERVE_REQUIRE_SERVICES=1 (CI).
set -u

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 1 50); do
  if pg_up && redis_up; then break; fi
  sleep 0.2
done
pg_up && echo "PostgreSQL: up" || echo "PostgreSQL: down (its tests will skip)"
redis_up && echo "Redis: up" || echo "Redis: down (its tests will skip)"
exit 0
