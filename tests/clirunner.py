"""The ``searchengine`` command run in this process (click's ``CliRunner``), for tests
that check what a user sees: the exit code, stdout and stderr apart."""

from __future__ import annotations

import json

from click.testing import CliRunner, Result

from searchengine.cli import main


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``searchengine ARGS``; the result holds ``exit_code``, ``stdout`` and ``stderr``."""
    return CliRunner().invoke(main, list(args), input=input, env=env)


def ok_json(*args: str, env: dict[str, str] | None = None) -> dict | list:
    """``searchengine ARGS --json``, which must succeed; what it printed, parsed."""
    result = cli(*args, "--json", env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)
