"""Which modules a piece of code imports, measured in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable


def imported_after(code: str, modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` that are in ``sys.modules`` once ``code`` has run."""
    wanted = sorted(modules)
    probe = f"{code}\nimport sys\nprint(','.join(m for m in {wanted!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]
