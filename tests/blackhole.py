"""A network that silently stops carrying a server's packets, for real, on one
machine: what a partition, a dead host, or a firewall or NAT that dropped an idle
connection from its table (cloud NATs do after a few minutes) does to a client that
already holds a connection open. Nothing answers and nothing refuses: the client's
kernel retransmits unacknowledged data for ~15 minutes (``tcp_retries2``) and probes
an idle connection after 2 hours (``tcp_keepalive_time``) before it gives up.

How, without touching this machine's network: the scenario runs in a network
namespace of its own (``unshare -n``, as root), whose loopback carries only its own
traffic, and ``swallow(port)`` classifies what the server at that port sends into an
HTB class of the Linux traffic control (``tc``, iproute2) whose queue holds no
packet: each is dropped, never delivered (tc-htb(8), tc-u32(8), tc-pfifo(8); checked:
not one byte of a minute's sends arrives). A userspace proxy cannot do this: its
kernel acknowledges what it receives whether or not it forwards it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

_SETUP = "ip link set lo up"


@functools.cache
def unavailable() -> str | None:
    """Why a scenario cannot run here, or None."""
    if os.geteuid() != 0:
        return "a network namespace of its own needs root"
    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            return f"no {tool} (util-linux / iproute2)"
    trial = f"{_SETUP} && tc qdisc add dev lo root handle 1: htb && tc qdisc del dev lo root"
    trial += " && tc qdisc add dev lo root pfifo limit 0"
    done = subprocess.run(["unshare", "-n", "sh", "-c", trial], capture_output=True, text=True)
    if done.returncode != 0:
        return f"no network namespace with HTB traffic control here: {done.stderr.strip()}"
    return None


def run_isolated(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python script ARGS`` in a network namespace of its own (its loopback up)."""
    command = [sys.executable, script, *args]
    return subprocess.run(
        ["unshare", "-n", "sh", "-c", f'{_SETUP} && exec "$0" "$@"', *command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def swallow(port: int) -> None:
    """From now on, what the server at ``port`` sends vanishes on its way: its answers,
    the acknowledgements of what it receives, its replies to keepalive probes.

    Only the server's side is dropped, because the client's state is what is tested: a
    packet the client's own queue drops is, to its kernel, local congestion, which it
    retries every 0.5 s without counting a keepalive probe as lost (``tcp_timer.c``),
    whereas one that leaves and is never answered counts, as across a network.
    """
    _tc("qdisc add dev lo root handle 1: htb default 10 r2q 1")
    _tc("class add dev lo parent 1: classid 1:10 htb rate 10gbit")
    _tc("class add dev lo parent 1: classid 1:20 htb rate 8bit ceil 8bit burst 1 cburst 1")
    # A queue of no packets: the rate alone lets the first packet through (HTB sends
    # while its tokens last), and one more every minute or so.
    _tc("qdisc add dev lo parent 1:20 handle 20: pfifo limit 0")
    _tc(f"filter add dev lo parent 1: protocol ip u32 match ip sport {port} 0xffff flowid 1:20")


def restore() -> None:
    """The network carries every packet again."""
    _tc("qdisc del dev lo root")


def _tc(arguments: str) -> None:
    subprocess.run(["tc", *arguments.split()], check=True, capture_output=True)
