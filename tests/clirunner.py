"""The ``searchengine`` command as tests run it, to check what a user sees (the exit
code, stdout and stderr apart): in this process (click's ``CliRunner``), or in a
process of its own (``spawn``), where its connections, time-outs and exit are the
real ones."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from searchengine.cli import main

EXE = str(Path(sys.executable).with_name("searchengine"))


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``searchengine ARGS``; the result holds ``exit_code``, ``stdout`` and ``stderr``."""
    return CliRunner().invoke(main, list(args), input=input, env=env)


def ok_json(*args: str, env: dict[str, str] | None = None) -> dict | list:
    """``searchengine ARGS --json``, which must succeed; what it printed, parsed."""
    result = cli(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def spawn(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``searchengine ARGS`` in a process of its own; ``timeout`` bounds a hang."""
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def on_server(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``spawn`` for a host whose collections folder is ``home``, its catalog at ``url``."""
    return spawn(*args, "--index-dir", str(home), "--database-url", url)
