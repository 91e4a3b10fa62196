"""How long-running work reports progress (the CLI passes a progress bar)."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Where ingest, caching and benchmarks report how far they are."""

    def start(self, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Reports nowhere."""

    def start(self, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass
