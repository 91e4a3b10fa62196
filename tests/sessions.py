"""Which ONNX Runtime sessions a test's commands open, in which thread."""

from __future__ import annotations

import threading
import time

import pytest

from searchengine.models.onnx import OnnxClipEncoder


def record_opens(
    monkeypatch: pytest.MonkeyPatch, slow: str | None = None
) -> list[tuple[str, str, str]]:
    """Every tower session opened from now on, as (tower, "opening" | "opened", thread);
    the tower is ``image``, ``image-int8`` (the reduced one) or ``text``. The ``slow``
    tower takes half a second more to open."""
    events: list[tuple[str, str, str]] = []
    real_open = OnnxClipEncoder._open

    def recording(self: OnnxClipEncoder, name: str) -> object:
        thread = threading.current_thread().name
        tower = "image-int8" if name == "image" and self.precision == "int8" else name
        events.append((tower, "opening", thread))
        session = real_open(self, name)
        if name == slow:
            time.sleep(0.5)
        events.append((tower, "opened", thread))
        return session

    monkeypatch.setattr(OnnxClipEncoder, "_open", recording)
    return events
