#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth) and Redis
# (127.0.0.1:6379) are running for the tests, starting or installing them if not.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432
REDIS_HOST=127.0.0.1 REDIS_PORT=6379

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

postgres_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }

wait_for() {  # wait_for NAME CHECK_FUNCTION
    for _ in $(seq 1 30); do "$2" && return 0; sleep 1; done
    echo "ensure-services: $1 did not come up" >&2
    return 1
}

if ! postgres_up; then
    if ! command -v pg_ctlcluster >/dev/null; then
        echo "ensure-services: installing PostgreSQL from Debian packages"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
        # Test machines only: trust local connections, as the tests expect.
        as_root sed -i -E 's/(scram-sha-256|md5|peer)$/trust/' "$hba"
    fi
    echo "ensure-services: starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    wait_for PostgreSQL postgres_up
fi

if ! redis_up; then
    if ! command -v redis-server >/dev/null; then
        echo "ensure-services: installing Redis from Debian packages"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    echo "ensure-services: starting Redis"
    mkdir -p /tmp/redis-portal
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir /tmp/redis-portal --logfile /tmp/redis-portal/redis.log
    wait_for Redis redis_up
fi

psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc "select 1" >/dev/null \
    || { echo "ensure-services: cannot connect to PostgreSQL as user postgres on $PGHOST:$PGPORT" >&2; exit 1; }
echo "ensure-services: PostgreSQL and Redis are up"
