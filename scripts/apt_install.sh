# Sourced by the install_*.sh scripts: the one way they install Debian packages.
#
# apt_install WHO [APT-OPTION...] PACKAGE...: as root, quietly, without starting the
# packages' services (there is no init system here; the tests start their own servers
# on free ports). Without root or apt-get it says so on stderr and returns 1, so that
# the caller can end without failing (the tests that need the packages then skip);
# an apt-get that fails ends the calling script with its status, saying so.
apt_install() {
    local who=$1
    shift
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "$who: cannot apt-get here (needs root and apt-get); the tests that need it will skip" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || { echo "$who: apt-get update failed" >&2; exit 1; }
    # Without an init system a package's scripts start its service through
    # invoke-rc.d, which asks policy-rc.d first: 101 means "not now".
    local policy=/usr/sbin/policy-rc.d placed="" status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        placed=1
    fi
    apt-get install -y -qq "$@" >/dev/null || status=$?
    if [ -n "$placed" ]; then
        rm -f "$policy"
    fi
    if [ "$status" -ne 0 ]; then
        echo "$who: apt-get install $* failed (status $status)" >&2
        exit "$status"
    fi
}
