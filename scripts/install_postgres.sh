#!/usr/bin/env bash
# Install Debian's PostgreSQL server and PgBouncer for the `postgres` tests, if
# missing. The tests start a throwaway cluster of their own (tests/pgcluster.py: initdb
# in a temporary folder, 127.0.0.1, a free port), and PgBouncers in front of it
# (tests/pgbouncer.py), and stop them at the end; nothing here starts a server.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
source "$(dirname "$0")/apt_install.sh"
wanted=()
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    wanted+=(postgresql)
fi
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    wanted+=(pgbouncer)
fi
if [ ${#wanted[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    # The package's own cluster (and its server on port 5432) is not needed: the tests
    # make theirs. postgresql-common reads this before it would create one.
    mkdir -p /etc/postgresql-common
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
fi
apt_install install_postgres --no-install-recommends -o Dpkg::Options::=--force-confold \
    "${wanted[@]}" || exit 0
echo "installed: ${wanted[*]} ($(ls -d /usr/lib/postgresql/*/bin | tail -1))"
