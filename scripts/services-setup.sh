#!/usr/bin/env bash
# The services the tests talk to: the machine's PostgreSQL (127.0.0.1:5432, trust auth,
# database `test`) and Redis (127.0.0.1:6379). They run on the development and CI machines
# from boot; this starts whichever has stopped (with the machine's own start commands) and
# fails loudly if one still does not answer, so CI never passes by skipping them.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
if ! redis_up; then
    echo "services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
for _ in $(seq 1 50); do
    if pg_up && redis_up; then
        exit 0
    fi
    sleep 0.2
done
pg_up || { echo "services: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }
redis_up || { echo "services: Redis does not answer on 127.0.0.1:6379" >&2; exit 1; }
