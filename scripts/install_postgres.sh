#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the `postgres` tests, if missing. The tests
# start a throwaway cluster of their own (tests/pgcluster.py: initdb in a temporary
# folder, 127.0.0.1, a free port) and stop it at the end; nothing here starts a server.
# Idempotent and quiet; needs root (CI runs as root) or does nothing but say why.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "install_postgres: no PostgreSQL server and cannot apt-get it; postgres tests will skip" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# The package's own cluster (and its server on port 5432) is not needed: the tests
# make theirs. postgresql-common reads this before it would create one.
mkdir -p /etc/postgresql-common
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
fi
apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null
echo "installed: $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
