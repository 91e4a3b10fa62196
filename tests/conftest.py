"""Fixtures shared by unit and end-to-end tests.

Fake Hugging Face hub (see ``tests/fakehub.py``):

- ``fake_hub`` (session): the tiny repos (CLIPS in its first published layout and the
  ``bert-base-uncased`` tokenizer it reads, transformers CLIP, BLIP captioning and VQA),
  downloaded once under a temporary ``HF_HOME`` as ``hf download`` does.
- ``clips_hubs`` (session): one ``HF_HOME`` per published CLIPS layout (``"bert"``: the
  repo plus ``bert-base-uncased``, the same cache as ``fake_hub``; ``"clips"``: the repo
  alone, its tokenizer inside it).
  Building it imports torch, open_clip and transformers, so only tests that ask for it
  pay for that.
- ``offline_hub``: ``fake_hub`` made this process's hub cache for one test, offline.
  Use it for in-process loads (``open_clip.create_model_and_transforms("hf-hub:...")``,
  ``CLIPModel.from_pretrained(...)``); every change is undone after the test.
- ``fake_hub_with_builtin`` (session): a separate ``HF_HOME`` that also holds the full-size
  random ``ViT-B-32:openai`` checkpoint (~300 MB, seconds to write); for ``slow`` tests,
  with ``activate(monkeypatch, hub.hf_home)`` or ``hub.env()``.
- ``offline_hub_env``: a full environment for ``subprocess.run(..., env=offline_hub_env)``
  that points a child process (the CLI) at ``fake_hub``, offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fakehub import (
    FakeHub,
    activate,
    build_fake_hub,
    build_openclip_builtin,
    clips_repo,
)


@pytest.fixture(scope="session")
def fake_hub(tmp_path_factory: pytest.TempPathFactory) -> FakeHub:
    """The default fake hub (tiny CLIPS, CLIP and BLIP repos), built once per session."""
    return build_fake_hub(tmp_path_factory.mktemp("hf_home"))


@pytest.fixture(scope="session")
def clips_hubs(fake_hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, FakeHub]:
    """Both published CLIPS layouts, each in its own ``HF_HOME`` (see the module docstring)."""
    tokenizer_inside = build_fake_hub(
        tmp_path_factory.mktemp("hf_home_clips"), builders=(lambda: clips_repo("clips"),)
    )
    return {"bert": fake_hub, "clips": tokenizer_inside}


@pytest.fixture(scope="session")
def fake_hub_with_builtin(tmp_path_factory: pytest.TempPathFactory) -> FakeHub:
    """The default repos plus open_clip's ``ViT-B-32:openai`` at full size, in its own HF_HOME.

    Kept apart from ``fake_hub`` so tests there can rely on the builtin being missing.
    """
    hub = build_fake_hub(tmp_path_factory.mktemp("hf_home_builtin"))
    builtin = build_openclip_builtin(hub.hf_home, "ViT-B-32", "openai")
    return FakeHub(hub.hf_home, {**hub.repos, builtin.repo_id: builtin})


@pytest.fixture
def offline_hub(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """Make ``fake_hub`` this process's Hugging Face cache, offline, for one test."""
    activate(monkeypatch, fake_hub.hf_home)
    return fake_hub


@pytest.fixture
def empty_offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """An empty hub cache, offline: every download fails as on a machine without weights."""
    hub = build_fake_hub(tmp_path / "hf_home", builders=())
    activate(monkeypatch, hub.hf_home)
    return hub


@pytest.fixture
def offline_hub_env(fake_hub: FakeHub) -> dict[str, str]:
    """This process's environment, pointed at ``fake_hub`` and offline, for subprocesses."""
    return {**os.environ, **fake_hub.env()}


@pytest.fixture(scope="session")
def ray_head():
    """A one-node Ray cluster (``scripts/raycluster.py``), started once, stopped at the end."""
    from raycluster import RayHead

    head = RayHead()
    yield head
    head.stop()


# -- catalog backends ------------------------------------------------------------------
def _started_cluster(**options: Any) -> Any:
    """``start_cluster(**options)``; skips, saying why, where PostgreSQL cannot be
    started, and under CI fails instead: it must start there."""
    from pgcluster import start_cluster

    return _started(start_cluster, **options)


def _started(start: Any, *args: Any, **options: Any) -> Any:
    from pgcluster import ClusterUnavailable

    try:
        return start(*args, **options)
    except ClusterUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the PostgreSQL tests, but a server did not start: {exc}")
        pytest.skip(f"PostgreSQL is not available here: {exc}")


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the session (``tests/pgcluster.py``)."""
    cluster = _started_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def module_cluster():
    """A throwaway cluster for one test module: one its tests may copy or replicate
    (``Cluster.standby``) without the session's cluster's other databases."""
    cluster = _started_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_cluster():
    """Starts a throwaway cluster of the test's own, one it may stop, crash or fill
    (``start_cluster``'s options: ``durable``, ``wal_dir``, ``settings``); each is
    stopped and removed at the end of the test."""
    started: list[Any] = []

    def start(**options: Any) -> Any:
        started.append(_started_cluster(**options))
        return started[-1]

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture
def pgbouncer(pg_cluster):
    """Starts a real PgBouncer in front of a database of the session's cluster
    (``tests/pgbouncer.py``: ``start_bouncer``'s options); each is stopped at the end."""
    from pgbouncer import start_bouncer

    started: list[Any] = []

    def start(database: str, **options: Any) -> Any:
        started.append(_started(start_bouncer, pg_cluster, database, **options))
        return started[-1]

    yield start
    for bouncer in started:
        bouncer.stop()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str | None:
    """Each catalog backend: ``None`` (SQLite in the collection's folder) or the URL of
    a fresh, empty PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.new_database()
    request.addfinalizer(lambda: cluster.give_back(url))
    return url


# -- the disk the tests write to -----------------------------------------------------
# The suite writes about 3 GiB under the temporary folder (hub caches, collections,
# the peer tools' environments). On a shared disk that fills, every later test errors
# in its fixtures; these lines make that cause visible in the first and last lines.
NEEDED_GIB = 3.0


def _free_gib() -> float:
    return shutil.disk_usage(tempfile.gettempdir()).free / 2**30


def pytest_report_header(config: pytest.Config) -> str:
    where = tempfile.gettempdir()
    return f"disk: {_free_gib():.1f} GiB free in {where} (the suite needs ~{NEEDED_GIB:.0f})"


def pytest_sessionstart(session: pytest.Session) -> None:
    free = _free_gib()
    if free < NEEDED_GIB and not session.config.option.collectonly:
        pytest.exit(
            f"only {free:.1f} GiB free in {tempfile.gettempdir()}: the suite needs about "
            f"{NEEDED_GIB:.0f} GiB; free some space (or set TMPDIR to a larger disk) and run again",
            returncode=1,
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    free = _free_gib()
    terminalreporter.write_line(f"disk: {free:.1f} GiB free in {tempfile.gettempdir()} at the end")
    if free < 0.5:
        terminalreporter.write_line(
            "disk: nearly full; errors above may be 'No space left on device', not the code"
        )
