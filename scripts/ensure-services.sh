#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432, user postgres, trust auth), Redis (127.0.0.1:6379) and the
# Orthanc PACS (HTTP 127.0.0.1:8042, DICOM 4242, forwarding chest films to the portal's receiver on
# 11112) are running for development and the tests, starting or installing them if not. The tests
# start their own Orthanc on free ports; they need the Debian package this installs.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
ORTHANC_HTTP_PORT=${ORTHANC_HTTP_PORT:-8042} ORTHANC_DICOM_PORT=${ORTHANC_DICOM_PORT:-4242}
ORTHANC_DIR=${ORTHANC_DIR:-var/orthanc}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

postgres_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]; }
orthanc_up() { python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$ORTHANC_HTTP_PORT/system', timeout=1)" 2>/dev/null; }

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

if ! command -v Orthanc >/dev/null || ! ls /usr/share/orthanc/plugins/*DicomWeb* >/dev/null 2>&1; then
    echo "ensure-services: installing the Orthanc PACS from Debian packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb >/dev/null
fi
if ! orthanc_up; then
    echo "ensure-services: starting Orthanc (HTTP $ORTHANC_HTTP_PORT, DICOM $ORTHANC_DICOM_PORT) in $ORTHANC_DIR"
    config=$(python3 "$(dirname "$0")/orthanc_config.py" --dir "$ORTHANC_DIR" \
        --http-port "$ORTHANC_HTTP_PORT" --dicom-port "$ORTHANC_DICOM_PORT")
    setsid Orthanc "$config" >"$ORTHANC_DIR/orthanc.log" 2>&1 < /dev/null &
    wait_for Orthanc orthanc_up
fi

psql -h "$PGHOST" -p "$PGPORT" -U postgres -d postgres -tAc "select 1" >/dev/null \
    || { echo "ensure-services: cannot connect to PostgreSQL as user postgres on $PGHOST:$PGPORT" >&2; exit 1; }
echo "ensure-services: PostgreSQL, Redis and Orthanc are up"
