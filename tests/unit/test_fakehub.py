"""The fake hub cache has the on-disk layout the Hugging Face hub client reads, and the local
hub (``tests/localhub.py``) answers the real client as the hub does.

Small byte strings only: no torch, no models. Loading real repos through open_clip and
transformers is in ``tests/e2e``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fakehub import (
    RepoSpec,
    activate,
    build_fake_hub,
    copy_hf_home,
    download_like_cli,
    go_online,
    offline_env,
    write_cached_repo,
)
from localhub import LocalHub, Request

REPO = "some-org/some-model"
WEIGHTS = b"\x00\x01 pretend safetensors \xff"
CONFIG = b'{"hello": "world"}\n'


def _spec(**extra: bytes) -> RepoSpec:
    return RepoSpec(
        REPO,
        {"config.json": CONFIG, "model.safetensors": WEIGHTS, **extra},
        absent=("tokenizer.json",),
    )


def test_layout_matches_the_hub_client(tmp_path: Path) -> None:
    cached = write_cached_repo(tmp_path, _spec())

    repo_dir = tmp_path / "models--some-org--some-model"
    assert (repo_dir / "refs" / "main").read_text() == cached.commit
    assert len(cached.commit) == 40 and int(cached.commit, 16) >= 0
    assert cached.snapshot == repo_dir / "snapshots" / cached.commit

    # LFS files are named by sha256, plain git files by their git blob sha1.
    lfs_blob = hashlib.sha256(WEIGHTS).hexdigest()
    git_blob = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert sorted(p.name for p in (repo_dir / "blobs").iterdir()) == sorted([lfs_blob, git_blob])
    for name, blob in [("model.safetensors", lfs_blob), ("config.json", git_blob)]:
        link = cached.snapshot / name
        assert link.is_symlink()
        assert os.readlink(link) == f"../../blobs/{blob}"
    assert (cached.snapshot / "config.json").read_bytes() == CONFIG

    assert (repo_dir / ".no_exist" / cached.commit / "tokenizer.json").is_file()


def test_git_blob_name_matches_git_hash_object(tmp_path: Path) -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    cached = write_cached_repo(tmp_path, RepoSpec(REPO, {"README.md": b"hello\n"}))
    target = os.readlink(cached.snapshot / "README.md")
    assert target == "../../blobs/ce013625030ba8dba906f756967f9e9ca394464a"


def test_files_in_subfolders_link_back_to_blobs(tmp_path: Path) -> None:
    cached = write_cached_repo(tmp_path, _spec(**{"text/config.json": b"{}"}))
    link = cached.snapshot / "text" / "config.json"
    assert os.readlink(link).startswith("../../../blobs/")
    assert link.read_bytes() == b"{}"


def test_same_content_same_commit_new_content_moves_main(tmp_path: Path) -> None:
    first = write_cached_repo(tmp_path, _spec())
    assert write_cached_repo(tmp_path, _spec()).commit == first.commit

    second = write_cached_repo(tmp_path, _spec(**{"extra.txt": b"more"}))
    assert second.commit != first.commit
    refs_main = tmp_path / "models--some-org--some-model" / "refs" / "main"
    assert refs_main.read_text() == second.commit
    assert (first.snapshot / "config.json").read_bytes() == CONFIG  # old snapshot kept


@pytest.mark.parametrize("repo_id", ["a/b/c", "/name", "org/"])
def test_repo_id_must_be_org_slash_name(tmp_path: Path, repo_id: str) -> None:
    with pytest.raises(ValueError, match="ORG/NAME"):
        write_cached_repo(tmp_path, RepoSpec(repo_id, {"a": b""}))


def test_a_file_cannot_be_present_and_absent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both present and absent"):
        write_cached_repo(tmp_path, RepoSpec(REPO, {"a.json": b"{}"}, absent=("a.json",)))


def test_hub_client_reads_it_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    hf_home = tmp_path / "hf_home"
    cached = write_cached_repo(hf_home / "hub", _spec())
    activate(monkeypatch, hf_home)

    path = hf_hub_download(REPO, "model.safetensors")
    assert Path(path) == cached.snapshot / "model.safetensors"
    assert Path(path).read_bytes() == WEIGHTS
    assert try_to_load_from_cache(REPO, "config.json") == str(cached.snapshot / "config.json")
    # recorded 404: the cache knows the file does not exist
    assert try_to_load_from_cache(REPO, "tokenizer.json") is _CACHED_NO_EXIST
    # never seen: unknown, and offline there is no asking
    assert try_to_load_from_cache(REPO, "other.bin") is None
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "other.bin")
    assert try_to_load_from_cache("some-org/not-cached", "config.json") is None
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("some-org/not-cached", "config.json")


def test_activate_redirects_an_already_imported_hub_client(tmp_path: Path) -> None:
    import huggingface_hub.constants as constants

    before = (constants.HF_HOME, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    env_before = {k: os.environ.get(k) for k in offline_env(tmp_path)}
    with pytest.MonkeyPatch.context() as mp:
        activate(mp, tmp_path)
        assert constants.HF_HUB_CACHE == str(tmp_path / "hub")
        assert constants.is_offline_mode()
        assert os.environ["HF_HOME"] == str(tmp_path)
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert (constants.HF_HOME, constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE) == before
    assert {k: os.environ.get(k) for k in env_before} == env_before


# ------------------------------------------------------------------------- local hub


def test_cli_download_from_the_local_hub_fills_the_cache_like_the_hub(tmp_path: Path) -> None:
    hub = build_fake_hub(tmp_path / "hf_home", builders=(_spec,))
    cached = hub.repos[REPO]
    repo_dir = tmp_path / "hf_home" / "hub" / "models--some-org--some-model"
    assert (repo_dir / "refs" / "main").read_text() == cached.commit
    assert cached.files == ("config.json", "model.safetensors")
    assert (cached.snapshot / "model.safetensors").read_bytes() == WEIGHTS
    # Blobs are named by the etag the hub gave: sha256 for LFS files, git sha1 otherwise.
    blobs = {os.readlink(cached.snapshot / n).rsplit("/", 1)[1] for n in cached.files}
    assert blobs == {
        hashlib.sha256(WEIGHTS).hexdigest(),
        hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest(),
    }
    # `hf download` records no 404s: nothing asked for a file the repo lacks.
    assert not (repo_dir / ".no_exist").exists()


def test_an_online_load_records_the_files_a_repo_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    with LocalHub([_spec()]) as hub:
        go_online(monkeypatch, tmp_path / "hf_home", hub)
        assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == CONFIG
        with pytest.raises(EntryNotFoundError):
            hf_hub_download(REPO, "tokenizer.json")
    assert try_to_load_from_cache(REPO, "tokenizer.json") is _CACHED_NO_EXIST
    assert try_to_load_from_cache(REPO, "model.safetensors") is None  # never asked for
    paths = [r.path for r in hub.requests]
    assert f"/{REPO}/resolve/main/config.json" in paths
    assert f"/{REPO}/resolve/main/tokenizer.json" in paths


def test_a_bare_name_repo_is_served_and_cached(tmp_path: Path) -> None:
    spec = RepoSpec("bert-base-uncased", {"vocab.txt": b"[PAD]\n"})
    with LocalHub([spec]) as hub:
        cached = download_like_cli(tmp_path, hub, ["bert-base-uncased"])["bert-base-uncased"]
    assert cached.snapshot.parent.parent.name == "models--bert-base-uncased"
    assert (cached.snapshot / "vocab.txt").read_bytes() == b"[PAD]\n"


def test_unknown_repos_and_files_get_the_hubs_error_codes(tmp_path: Path) -> None:
    import httpx

    with LocalHub([_spec()]) as hub:
        missing_repo = httpx.head(f"{hub.endpoint}/nobody/nothing/resolve/main/config.json")
        missing_file = httpx.head(f"{hub.endpoint}/{REPO}/resolve/main/nothing.json")
        info = httpx.get(f"{hub.endpoint}/api/models/{REPO}/revision/main").json()
    assert (missing_repo.status_code, missing_repo.headers["X-Error-Code"]) == (401, "RepoNotFound")
    assert (missing_file.status_code, missing_file.headers["X-Error-Code"]) == (
        404,
        "EntryNotFound",
    )
    assert missing_file.headers["X-Repo-Commit"] == info["sha"]
    assert sorted(s["rfilename"] for s in info["siblings"]) == ["config.json", "model.safetensors"]


def test_before_request_can_stall_the_hub(tmp_path: Path) -> None:
    import threading

    import httpx

    release = threading.Event()
    seen: list[Request] = []

    def stall(request: Request) -> None:
        seen.append(request)
        release.wait(5)

    with LocalHub([_spec()], before_request=stall) as hub:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{hub.endpoint}/{REPO}/resolve/main/config.json", timeout=0.2)
        release.set()
    assert seen and seen[0].method == "GET"


@pytest.mark.parametrize("keep_links", [True, False])
def test_a_copied_cache_reads_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_links: bool
) -> None:
    from huggingface_hub import hf_hub_download

    hub = build_fake_hub(tmp_path / "one", builders=(_spec,))
    copy = copy_hf_home(hub.hf_home, tmp_path / "two", keep_links=keep_links)
    activate(monkeypatch, copy)
    path = Path(hf_hub_download(REPO, "model.safetensors"))
    assert path.is_relative_to(copy) and path.read_bytes() == WEIGHTS
    assert path.is_symlink() is keep_links
