"""ONNX Runtime path: parity with torch, torch-free tokenizers and preprocessing, cold search.

Models: the fake hub's CLIPS (HF BERT tokenizer, fixed-length text tower), a tiny
open_clip ``local-dir:`` model written here (CLIP's BPE tokenizer, causal text tower:
the same code path as ViT-B-32) and, when present, the shipped ``toy`` models.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fakehub import CLIPS_REPO_ID, FakeHub, activate
from importcheck import imported_after
from PIL import Image, ImageDraw
from sessions import record_opens

from searchengine import Collection, Config
from searchengine.cli import main
from searchengine.models import load_encoder, parse_model_spec
from searchengine.models.exports import MIN_COSINE, export_dir, read_export
from searchengine.models.lite import ClipBpeTokenizer, Preprocess, preprocess_image
from searchengine.models.onnx import OnnxClipEncoder, cpu_count, cuda_possible
from searchengine.models.onnx_verify import TOKEN_CHECK
from searchengine.models.spec import shipped_model_dir
from searchengine.ranking import calibrate
from searchengine.ranking.calibration import MIN_IMAGES
from searchengine.warmup import TextWarmup, ready_image_encoder

CLIPS = f"hf-hub:{CLIPS_REPO_ID}"

# Not the texts the export verified with: parity must hold beyond them.
TEXTS = [
    "a small green triangle on the left",
    "two dogs playing in the snow",
    "Ein Hund im Schnee",
    "🐶🐱 pets",
    "  a   RED\tcircle ",
    "a photo of " + "a very big house and " * 30,
]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(7)
    images = []
    for w, h in ((800, 600), (333, 517), (50, 40), (224, 224), (2000, 300)):
        image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        ImageDraw.Draw(image).ellipse((w // 4, h // 4, w // 2, h // 2), fill=(0, 200, 0))
        images.append(image)
    return images


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))


def _assert_parity(spec: str) -> OnnxClipEncoder:
    onnx = load_encoder(spec, "cpu", "onnx")
    torch_encoder = load_encoder(spec, "cpu", "torch")
    assert isinstance(onnx, OnnxClipEncoder)
    assert (onnx.dim, onnx.image_size) == (torch_encoder.dim, torch_encoder.image_size)
    images = _images()
    image_cos = _cosines(onnx.encode_images(images), torch_encoder.encode_images(images))
    text_cos = _cosines(onnx.encode_texts(TEXTS), torch_encoder.encode_texts(TEXTS))
    assert image_cos.min() >= MIN_COSINE, image_cos
    assert text_cos.min() >= MIN_COSINE, text_cos
    tokens = getattr(torch_encoder, "_tokenizer")(TEXTS).numpy()  # noqa: B009
    np.testing.assert_array_equal(onnx.tokenize(TEXTS), tokens)
    torch_encoder.close()
    return onnx


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny open_clip model folder with CLIP's own BPE tokenizer and causal text tower."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_clip")
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 64,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        model = open_clip.CLIP(**model_cfg)
        # Random weights at init scale make every text nearly the same vector; wider
        # ones make parity a meaningful check.
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 0.05)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture
def tiny_clip(tiny_clip_dir: Path, offline_hub: FakeHub) -> str:
    """The tiny model's spec, with this test's HF_HOME (and so its ONNX cache) offline."""
    return f"local-dir:{tiny_clip_dir}"


# ------------------------------------------------------------------ torch-free pieces


def test_clip_bpe_tokenizer_gives_open_clip_ids() -> None:
    import open_clip
    from open_clip.tokenizer import default_bpe

    rng = np.random.default_rng(3)
    alphabet = [*"abcdefghij KLMNOP.,!?'&;#-_0123456789", "é", "ß", "中", "😀", "\u0301"]
    random_texts = ["".join(rng.choice(alphabet, rng.integers(0, 60))) for _ in range(300)]
    reference = open_clip.get_tokenizer("ViT-B-32")
    # Words the vocabulary holds whole, and runs of them: the deepest chains of merges.
    ids = rng.integers(512, len(reference.encoder) - 2, 3000)
    words = [reference.decode([int(i)]) for i in ids]
    runs = [" ".join(words[i : i + 5]) for i in range(0, len(words), 5)]
    texts = [*TOKEN_CHECK, *TEXTS, *random_texts, *words, *runs]
    ours = ClipBpeTokenizer(Path(default_bpe()), 77, "lower")(texts)
    theirs = reference(texts).numpy()
    mismatched = [
        t for t, a, b in zip(texts, ours, theirs, strict=True) if not np.array_equal(a, b)
    ]
    assert not mismatched


def test_merges_are_read_up_to_the_count_or_the_end(tmp_path: Path) -> None:
    import gzip

    from searchengine.models.lite import _first_merges

    lines = ["#version: 0.2", *(f"é{i} ß{i}" for i in range(20000))]
    path = tmp_path / "merges.txt.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8") + b"\n"))
    assert _first_merges(path, 3) == lines[1:4]
    # Past the first chunk inflated (a cut may fall inside a two-byte character).
    assert _first_merges(path, 15000) == lines[1:15001]
    assert _first_merges(path, 50000) == lines[1:]  # a shorter file: all of it


@pytest.mark.parametrize(
    "cfg",
    [
        {"size": 224, "resize_mode": "shortest", "interpolation": "bicubic"},
        {"size": 336, "resize_mode": "squash", "interpolation": "bilinear"},
        {"size": 64, "resize_mode": "longest", "interpolation": "bicubic", "fill_color": 0},
        {"size": (96, 128), "resize_mode": "shortest", "interpolation": "bicubic"},
    ],
)
def test_numpy_preprocessing_equals_open_clip_transform(cfg: dict[str, object]) -> None:
    from open_clip.transform import image_transform

    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    transform = image_transform(
        cfg["size"],  # type: ignore[arg-type]
        is_train=False,
        mean=mean,
        std=std,
        resize_mode=str(cfg["resize_mode"]),
        interpolation=str(cfg["interpolation"]),
        fill_color=int(cfg.get("fill_color", 0)),  # type: ignore[call-overload]
    )
    ours = Preprocess.from_dict({**cfg, "mean": mean, "std": std})
    for image in [*_images(), _images()[0].convert("L")]:
        expected = transform(image.convert("RGB")).numpy()
        got = preprocess_image(image, ours)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < 1e-5


# --------------------------------------------------------------- ONNX vs torch parity


@pytest.mark.slow
def test_clips_onnx_matches_torch_and_records_the_export(offline_hub: FakeHub) -> None:
    onnx = _assert_parity(CLIPS)
    export = read_export(parse_model_spec(CLIPS))
    assert export is not None and export.verified
    manifest = export.manifest
    assert export.folder.parent.parent == offline_hub.hf_home  # beside the HF cache
    assert manifest["tokenizer"]["kind"] == "clips"  # CLIPS' own layout, torch-free
    assert manifest["text"]["mode"] == "fixed"  # class token last: no truncation
    assert manifest["verification"]["min_cosine_image"] >= MIN_COSINE
    writers = {"torch", "open_clip_torch", "transformers", "tokenizers", "onnx", "searchengine"}
    assert writers <= set(manifest["versions"]) and manifest["onnxruntime"] != "-"
    # Keyed on everything it read: the model repo's files and the tokenizer repo's file.
    read = {(src.get("hub"), src.get("file")) for src in manifest["sources"]}
    assert ("models--bert-base-uncased", "tokenizer.json") in read
    hub_dir = "models--" + CLIPS_REPO_ID.replace("/", "--")
    assert {(hub_dir, "open_clip_config.json"), (hub_dir, "open_clip_pytorch_model.bin")} <= read
    assert manifest["opset"] >= 17
    # Weights live beside each graph, so ONNX Runtime maps them instead of copying.
    for tower in ("image", "text"):
        graph = export.folder / manifest["files"][tower]
        weights = graph.with_name(graph.name + ".data")
        assert weights.stat().st_size > graph.stat().st_size
    onnx.close()


@pytest.mark.slow
def test_causal_text_tower_cuts_padding_and_matches_torch(tiny_clip: str) -> None:
    onnx = _assert_parity(tiny_clip)
    manifest = onnx._manifest
    assert manifest["text"]["mode"] == "causal"
    assert manifest["tokenizer"]["kind"] == "clip_bpe"
    assert (export_dir(parse_model_spec(tiny_clip)) / "token_embedding.npy").is_file()


def test_no_two_threads_read_a_numpy_file_at_once(
    tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # np.load parses headers with ast.literal_eval; two threads in the ast module at once
    # failed a cold search with "SystemError: AST constructor recursion depth mismatch"
    # (CPython 3.11.7): its warm-up thread and its main thread both encoded text.
    load_encoder(tiny_clip, "cpu", "onnx").close()  # the export, made once
    encoder = load_encoder(tiny_clip, "cpu", "onnx")
    real_load, inside, most = np.load, [0], [0]
    lock = threading.Lock()

    def slow_load(*args: object, **kwargs: object) -> object:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)  # a thread switch in the middle, as the scheduler may make
        try:
            return real_load(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(np, "load", slow_load)
    texts = ["a red circle", "a blue square"]
    results: list[np.ndarray] = []
    jobs = [lambda: results.append(encoder.encode_texts(texts)) for _ in range(3)]
    jobs.append(lambda: results.append(encoder.stored_text_vectors(texts)))
    jobs.append(lambda: results.append(encoder.stored_text_vectors(texts)))
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    encoder.close()
    assert len(results) == 5 and most[0] == 1
    for vectors in results[1:]:
        np.testing.assert_allclose(vectors, results[0], atol=1e-5)


@pytest.mark.slow
def test_image_lanes_run_side_by_side_with_the_same_vectors(tiny_clip: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    onnx = load_encoder(tiny_clip, "cpu", "onnx")
    assert isinstance(onnx, OnnxClipEncoder)
    images = _images()
    pixels = np.stack([onnx.preprocess(im) for im in images])
    alone = onnx.encode_pixels(pixels)
    assert onnx.image_lanes(2) == min(2, cpu_count())
    with ThreadPoolExecutor(2) as pool:  # the lanes' calls, at once on one session
        halves = list(pool.map(onnx.encode_pixels, [pixels[:2], pixels[2:]]))
    np.testing.assert_allclose(np.concatenate(halves), alone, atol=1e-5)
    assert onnx.image_lanes(1) == 1  # back to one call on every core
    np.testing.assert_allclose(onnx.encode_pixels(pixels), alone, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy", "toy-large"])
def test_shipped_toy_models_onnx_match_torch(
    name: str, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not (shipped_model_dir(name) / "open_clip_config.json").is_file():
        pytest.skip(f"the {name} model is not in searchengine/assets yet")
    activate(monkeypatch, fake_hub.hf_home)
    _assert_parity(name)


@pytest.mark.slow
def test_changed_weights_invalidate_the_export(
    tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    activate(monkeypatch, tmp_path / "hf_home")
    folder = tmp_path / "model"
    shutil.copytree(tiny_clip_dir, folder)
    spec = parse_model_spec(f"local-dir:{folder}")
    first = load_encoder(spec, "cpu", "onnx")
    assert read_export(spec) is not None
    weights = folder / "open_clip_model.safetensors"
    _retrain(weights)
    assert read_export(spec) is None  # stale: would give the old model's vectors
    second = load_encoder(spec, "cpu", "onnx")  # re-exported
    assert read_export(spec) is not None
    assert isinstance(first, OnnxClipEncoder) and isinstance(second, OnnxClipEncoder)


def _retrain(weights: Path) -> None:
    """New weights in place, same names and shapes (a retrained model)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, weights)


@pytest.mark.slow
def test_a_changed_tokenizer_file_re_exports(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIPS' tokenizer lives in bert-base-uncased: a new one there must re-export."""
    from fakehub import bert_base_uncased_repo, copy_hf_home, write_cached_repo

    hf_home = copy_hf_home(fake_hub.hf_home, tmp_path / "hf_home")
    activate(monkeypatch, hf_home)
    spec = parse_model_spec(CLIPS)
    first = load_encoder(spec, "cpu", "onnx")
    assert isinstance(first, OnnxClipEncoder)
    before = first.tokenize(["a dog"])
    assert read_export(spec) is not None
    # The tokenizer repo moves on (refs/main to a new snapshot): "dog" is no longer a word.
    bert = bert_base_uncased_repo()
    vocab = bert.files["vocab.txt"].decode().replace("\ndog\n", "\nd0g\n")
    from fakehub import RepoSpec
    from tokenizers.implementations import BertWordPieceTokenizer

    (tmp_path / "vocab.txt").write_text(vocab)
    new = BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=True).to_str()
    files = {**bert.files, "vocab.txt": vocab.encode(), "tokenizer.json": new.encode()}
    write_cached_repo(hf_home / "hub", RepoSpec(bert.repo_id, files))
    assert read_export(spec) is None
    second = load_encoder(spec, "cpu", "onnx")
    assert isinstance(second, OnnxClipEncoder)
    after = second.tokenize(["a dog"])
    assert not np.array_equal(before, after)  # the new tokenizer's ids, not the old export's
    torch_encoder = load_encoder(spec, "cpu", "torch")
    np.testing.assert_array_equal(after, torch_encoder._tokenizer(["a dog"]).numpy())  # type: ignore[attr-defined]


def test_an_edited_tokenizer_in_a_model_folder_re_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    """No export needed to test the key: record the folder, edit a file, check it."""
    from searchengine.models.provenance import record, unchanged

    activate(monkeypatch, fake_hub.hf_home)
    folder = tmp_path / "clips"
    shutil.copytree(fake_hub.repos[CLIPS_REPO_ID].snapshot, folder, symlinks=False)
    sources = record(sorted(folder.iterdir()))
    assert unchanged(sources)
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text() + " ")
    assert not unchanged(sources)


@pytest.mark.slow
def test_an_export_by_other_package_versions_is_not_reused(
    tiny_clip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from searchengine.models import exports

    spec = parse_model_spec(tiny_clip)
    load_encoder(spec, "cpu", "onnx")
    assert read_export(spec) is not None
    real = exports.writer_versions()
    monkeypatch.setattr(exports, "writer_versions", lambda: {**real, "torch": "9.9.9"})
    assert read_export(spec) is None


@pytest.mark.slow
def test_a_copied_cache_keeps_its_exports(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    from fakehub import copy_hf_home

    spec = parse_model_spec(CLIPS)
    activate(monkeypatch, fake_hub.hf_home)
    load_encoder(spec, "cpu", "onnx")
    copy = copy_hf_home(fake_hub.hf_home, tmp_path / "elsewhere")
    activate(monkeypatch, copy)
    export = read_export(spec)
    assert export is not None and export.folder.is_relative_to(copy)


@pytest.mark.slow
def test_auto_falls_back_to_torch_when_verification_fails(
    tiny_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from searchengine.errors import ModelError
    from searchengine.models.openclip import OpenClipEncoder

    activate(monkeypatch, tmp_path / "hf_home")  # an empty ONNX cache: a fresh export
    tiny_clip = f"local-dir:{tiny_clip_dir}"
    monkeypatch.setattr("searchengine.models.onnx_verify.MIN_COSINE", 1.01)  # cannot pass
    assert isinstance(load_encoder(tiny_clip, "cpu", "auto"), OpenClipEncoder)
    export = read_export(parse_model_spec(tiny_clip))
    assert export is not None and not export.verified and "cosine" in export.reason
    with pytest.raises(ModelError, match="--runtime torch"):
        load_encoder(tiny_clip, "cpu", "onnx")


# ----------------------------------------------------------- cold search without torch

_SEARCH_WITHOUT_TORCH = textwrap.dedent(
    """
    import sys
    from click.testing import CliRunner
    from searchengine.cli import main

    result = CliRunner().invoke(main, ["search", sys.argv[1], "--index-dir", sys.argv[2], "--json"])
    assert result.exit_code == 0, result.output
    print(result.output)
    heavy = ("torch", "torchvision", "open_clip", "transformers", "sqlalchemy")
    heavy = [m for m in heavy if m in sys.modules]
    print("IMPORTED:" + ",".join(heavy))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["clips", "tiny"])
def test_search_with_an_export_never_imports_torch_or_the_sql_layer(
    which: str, tiny_clip_dir: Path, offline_hub_env: dict[str, str], tmp_path: Path
) -> None:
    spec = CLIPS if which == "clips" else f"local-dir:{tiny_clip_dir}"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(_images()):
        image.save(photos / f"{i}.jpg")
    env = {**offline_hub_env, "SEARCHENGINE_RUNTIME": "auto"}
    if cuda_possible():  # a GPU machine runs torch on CUDA, by design; test the CPU path
        env["SEARCHENGINE_DEVICE"] = "cpu"
    exe = str(Path(sys.executable).with_name("searchengine"))
    index = [exe, "index", str(photos), "-m", spec]
    indexed = subprocess.run(
        [*index, "--index-dir", str(tmp_path / "idx")], env=env, capture_output=True, text=True
    )
    assert indexed.returncode == 0, indexed.stderr
    searched = subprocess.run(
        [sys.executable, "-c", _SEARCH_WITHOUT_TORCH, "a green circle", str(tmp_path / "idx")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert searched.returncode == 0, searched.stderr
    results = json.loads(searched.stdout.split("IMPORTED:")[0])
    assert len(results) == len(_images())
    assert searched.stdout.strip().endswith("IMPORTED:")  # none of them


# ------------------------------------------------------- warm-up of a cold search


def _cut_short_in_own_cache(
    file: str, spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    """``spec``'s export, in an HF cache of this test's own, with ``file`` cut short:
    ONNX Runtime cannot open it."""
    from fakehub import copy_hf_home

    load_encoder(spec, "cpu", "onnx")
    activate(monkeypatch, copy_hf_home(fake_hub.hf_home, tmp_path / "hf_home"))
    graph = export_dir(parse_model_spec(spec)) / file
    graph.write_bytes(graph.read_bytes()[:1000])


def _assert_same_hits(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    """The same photos in the same order, with the same scores (to float rounding)."""
    assert [name for name, _ in got] == [name for name, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def _tiny_collection(spec: str, tmp_path: Path) -> Config:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, image in enumerate(_images()):
        image.save(photos / f"{i}.jpg")
    config = Config(home=tmp_path / "idx", device="cpu")
    with Collection.open("c", config, create=True, model=spec) as coll:
        coll.index([photos])
    return config


@pytest.mark.slow
def test_warm_up_opens_the_text_tower_and_searches_alike(tiny_clip: str, tmp_path: Path) -> None:
    config = _tiny_collection(tiny_clip, tmp_path)
    warmed = TextWarmup(config, "c").result()
    assert isinstance(warmed, OnnxClipEncoder)
    assert "text" in warmed._sessions  # opened in the background, before any query
    with Collection.open("c", config, encoder=warmed) as coll:
        fast = [(hit.path, hit.score) for hit in coll.search("a green circle", k=5)]
    with Collection.open("c", config) as coll:
        plain = [(hit.path, hit.score) for hit in coll.search("a green circle", k=5)]
    _assert_same_hits(fast, plain)


@pytest.mark.slow
def test_a_cold_search_opens_the_index_while_the_text_tower_opens(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from searchengine.vectors import FaissIndex

    config = _tiny_collection(tiny_clip, tmp_path)
    with Collection.open("c", config) as coll:
        plain = [(hit.path, hit.score) for hit in coll.search("a green circle", k=5)]
    # The text tower takes half a second to open, so that the order shows.
    events = record_opens(monkeypatch, slow="text")
    real_load = FaissIndex.load.__func__  # type: ignore[attr-defined]

    def loading(cls: type[FaissIndex], path: Path, **options: object) -> FaissIndex:
        index = real_load(cls, path, **options)
        events.append(("index", "loaded", threading.current_thread().name))
        return index

    monkeypatch.setattr(FaissIndex, "load", classmethod(loading))
    args = ["search", "a green circle", "--index-dir", str(config.home), "-k", "5"]
    cold = CliRunner().invoke(main, [*args, "--collection", "c", "--json", "--device", "cpu"])
    assert cold.exit_code == 0, cold.output
    # The encoder is handed over as soon as it is found: the index is read while the
    # tower is still opening, and the tower opens once, whichever thread gets there.
    steps = [(what, step) for what, step, _ in events]
    assert steps.index(("index", "loaded")) < steps.index(("text", "opened"))
    assert steps.count(("text", "opening")) == 1 and ("image", "opening") not in steps
    answered = [(hit["path"], hit["score"]) for hit in json.loads(cold.output)]
    _assert_same_hits(answered, plain)


@pytest.mark.slow
def test_a_damaged_text_tower_fails_a_cold_search_saying_what_to_do(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    _cut_short_in_own_cache("text.onnx", tiny_clip, tmp_path, monkeypatch, fake_hub)
    config = _tiny_collection(tiny_clip, tmp_path)
    args = ["search", "a green circle", "--index-dir", str(config.home), "--collection", "c"]
    failed = CliRunner().invoke(main, [*args, "--device", "cpu"])
    assert failed.exit_code != 0
    assert "text tower" in failed.output and "delete" in failed.output  # not a traceback


@pytest.mark.slow
def test_no_warm_up_where_it_cannot_help(tiny_clip: str, tmp_path: Path) -> None:
    config = _tiny_collection(tiny_clip, tmp_path)
    assert TextWarmup(replace(config, runtime="torch"), "c").result() is None
    assert TextWarmup(replace(config, database_url="sqlite:///other.db"), "c").result() is None
    assert TextWarmup(config, "absent").result() is None
    # Without an export the warm-up leaves the export (and torch) to the command.
    spec = parse_model_spec(tiny_clip)
    shutil.rmtree(export_dir(spec))
    assert TextWarmup(config, "c").result() is None
    assert read_export(spec) is None


def _photos(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        image = Image.new("RGB", (96, 72), tuple(int(v) for v in rng.integers(0, 256, 3)))
        ImageDraw.Draw(image).ellipse((10 + i, 10, 60, 50), fill=(0, 200 - 10 * i, 0))
        image.save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_an_ingest_calibrates_without_the_text_tower_once_the_nulls_are_stored(
    tiny_clip: str, tmp_path: Path
) -> None:
    photos = _photos(tmp_path / "photos", MIN_IMAGES + 2)
    config = Config(home=tmp_path / "idx", device="cpu", runtime="onnx")
    _forget_stored_texts(tiny_clip)  # the export may be shared with earlier tests
    with Collection.open("first", config, create=True, model=tiny_clip) as coll:
        coll.index([photos])
        assert "text" in coll.encoder._sessions  # the first run embeds the null queries
        first = coll.calibration()
    assert len(list(export_dir(parse_model_spec(tiny_clip)).glob("texts-*.npy"))) == 1
    with Collection.open("second", config, create=True, model=tiny_clip) as coll:
        coll.index([photos])
        # Opened neither while the photos decoded nor for the calibration after.
        assert "text" not in coll.encoder._sessions
        second = coll.calibration()
    assert first is not None and second is not None
    fresh = load_encoder(tiny_clip, "cpu", "onnx")
    with Collection.open("second", config) as coll:
        measured = calibrate(coll.vectors(), _NoStore(fresh))
    # The stored vectors are the text tower's: the same line as measured without them.
    assert second.threshold == first.threshold == measured.threshold


@pytest.mark.slow
def test_damaged_or_unwritable_stored_texts_are_made_again(tiny_clip: str) -> None:
    encoder = load_encoder(tiny_clip, "cpu", "onnx")
    assert isinstance(encoder, OnnxClipEncoder)
    texts = ("a photo", "zzzz")
    _forget_stored_texts(tiny_clip)
    expected = encoder.encode_texts(list(texts))
    np.testing.assert_array_equal(encoder.stored_text_vectors(texts), expected)
    (path,) = export_dir(parse_model_spec(tiny_clip)).glob("texts-*.npy")
    path.write_bytes(path.read_bytes()[:40])  # cut short, as by a full disk
    np.testing.assert_array_equal(encoder.stored_text_vectors(texts), expected)
    np.testing.assert_array_equal(np.load(path), expected)  # written again, whole
    assert not encoder.has_stored_text_vectors(("another list",))
    path.unlink()
    # Where the file cannot be written (a folder in its place fails the write as a
    # read-only cache does, for root too): answered all the same, nothing left behind.
    (path / "in-the-way").mkdir(parents=True)
    np.testing.assert_array_equal(encoder.stored_text_vectors(texts), expected)
    assert not encoder.has_stored_text_vectors(texts)
    assert not list(path.parent.glob(".texts-*"))  # no temporary file either
    shutil.rmtree(path)


@pytest.mark.slow
def test_a_first_index_opens_the_image_tower_while_the_catalog_loads(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_encoder(tiny_clip, "cpu", "onnx").close()  # the export exists (made once a model)
    events = record_opens(monkeypatch)
    photos = _photos(tmp_path / "photos", 4)
    config = Config(home=tmp_path / "idx", device="cpu", runtime="onnx")
    args = ["index", str(photos), "--index-dir", str(config.home), "-m", tiny_clip]
    args += ["--device", "cpu", "--runtime", "onnx"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    # once, before the lanes asked for it
    assert [(what, thread) for what, _, thread in events] == [("image", "image-warmup")] * 2
    events.clear()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    assert events == []  # nothing new to embed: no tower opened at all
    assert ready_image_encoder(config, "default", tiny_clip) is None  # not a first ingest
    assert ready_image_encoder(replace(config, precision="int8"), "new", tiny_clip) is None
    assert ready_image_encoder(replace(config, runtime="torch"), "new", tiny_clip) is None
    # The same vectors as an ingest that opened its own tower.
    with Collection.open("plain", config, create=True, model=tiny_clip) as coll:
        coll.index([photos])
        plain = [(Path(h.path).name, h.score) for h in coll.search("a green circle", k=4)]
    with Collection.open("default", config) as coll:
        warmed = [(Path(h.path).name, h.score) for h in coll.search("a green circle", k=4)]
    _assert_same_hits(warmed, plain)


def _prepacked(encoder: OnnxClipEncoder, name: str) -> bool:
    options = encoder._sessions[name].get_session_options()
    try:
        return options.get_session_config_entry("session.disable_prepacking") != "1"
    except Exception:  # onnxruntime's own error: the entry was never set
        return True


@pytest.mark.slow
def test_a_one_shot_image_tower_skips_pre_packing_unless_it_ingests(tiny_clip: str) -> None:
    from searchengine.models.onnx import ready_onnx_encoder

    plain = load_encoder(tiny_clip, "cpu", "onnx")
    assert isinstance(plain, OnnxClipEncoder)
    pixels = np.stack([plain.preprocess(im) for im in _images()])
    want = plain.encode_pixels(pixels)
    assert _prepacked(plain, "image")  # a server's or an ingest's: pre-packed
    once = ready_onnx_encoder(parse_model_spec(tiny_clip), one_shot=True)
    assert once is not None
    np.testing.assert_allclose(once.encode_pixels(pixels), want, atol=1e-5)
    assert not _prepacked(once, "image")  # one query image: the tower opens faster
    # An ingest (``search --refresh`` with new photos) runs it for every photo.
    once.image_lanes(1)
    assert "image" not in once._sessions  # opened again, pre-packed
    np.testing.assert_allclose(once.encode_pixels(pixels), want, atol=1e-5)
    assert _prepacked(once, "image")
    once.image_lanes(1)
    assert "image" in once._sessions  # and kept from then on


@pytest.mark.slow
def test_a_cold_similar_reads_rows_without_the_sql_layer_and_opens_what_it_needs(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _tiny_collection(tiny_clip, tmp_path)
    indexed = str(tmp_path / "photos" / "1.jpg")
    elsewhere = tmp_path / "query.png"
    _images()[1].save(elsewhere)
    box = (10, 10, 200, 300)
    with Collection.open("c", config) as coll:
        want = {
            "indexed": coll.similar(indexed, k=3),
            "elsewhere": coll.similar(elsewhere, k=3),
            "region": coll.similar(indexed, k=3, region=box, region_method="crop"),
        }
    events = record_opens(monkeypatch)
    # The command reaches the tower half a second late: on a machine busy with other
    # work, the warm-up thread may otherwise wait for a core until the command opens
    # the tower itself (which is right too, but not what is tested here).
    import searchengine.region

    real_term = searchengine.region.similar_term

    def late_term(*args, **kwargs):
        time.sleep(0.5)
        return real_term(*args, **kwargs)

    monkeypatch.setattr(searchengine.region, "similar_term", late_term)
    base = ["--index-dir", str(config.home), "-c", "c", "-k", "3", "--json", "--device", "cpu"]
    cases = {
        "indexed": [indexed],
        "elsewhere": [str(elsewhere)],
        "region": [indexed, "--region", "10,10,200,300", "--region-method", "crop"],
    }
    opened = {}
    for case, args in cases.items():
        events.clear()
        result = CliRunner().invoke(main, ["similar", *args, *base])
        assert result.exit_code == 0, result.output
        got = [(hit["path"], hit["score"]) for hit in json.loads(result.output)]
        _assert_same_hits(got, [(hit.path, hit.score) for hit in want[case]])
        opened[case] = [(what, thread) for what, step, thread in events if step == "opened"]
    # An indexed photo is its stored vector; any other image, or a part of one, is
    # embedded by the image tower, opened by the warm-up while the rows are read.
    assert opened == {
        "indexed": [],
        "elsewhere": [("image", "image-warmup")],
        "region": [("image", "image-warmup")],
    }
    assert indexed not in {hit["path"] for hit in json.loads(result.output)}  # left out
    loaded = imported_after(
        "from click.testing import CliRunner\n"
        "from searchengine.cli import main\n"
        f"done = CliRunner().invoke(main, ['similar', {str(elsewhere)!r}, *{base!r}])\n"
        "assert done.exit_code == 0, done.output",
        ["sqlalchemy", "torch"],
    )
    assert loaded == []


@pytest.mark.slow
def test_a_damaged_image_tower_fails_a_warmed_first_index_with_nothing_kept(
    tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_hub: FakeHub
) -> None:
    _cut_short_in_own_cache("image.onnx", tiny_clip, tmp_path, monkeypatch, fake_hub)
    photos = _photos(tmp_path / "photos", 4)
    args = ["index", str(photos), "--index-dir", str(tmp_path / "idx"), "-m", tiny_clip]
    failed = CliRunner().invoke(main, [*args, "--device", "cpu", "--runtime", "onnx"])
    assert failed.exit_code != 0
    assert "image tower" in failed.output and "delete" in failed.output  # not a traceback
    config = Config(home=tmp_path / "idx", device="cpu", runtime="onnx")
    with Collection.open("default", config) as coll:
        assert coll.status().images == 0


def _forget_stored_texts(spec: str) -> None:
    for path in export_dir(parse_model_spec(spec)).glob("texts-*.npy"):
        path.unlink()


class _NoStore:
    """An encoder seen without its stored texts: the calibration runs its text tower."""

    def __init__(self, encoder: OnnxClipEncoder) -> None:
        self.spec, self.dim = encoder.spec, encoder.dim
        self.encode_texts = encoder.encode_texts


@pytest.mark.slow
@pytest.mark.parametrize("traced_graph_is_wrong", [False, True])
def test_the_image_tower_is_traced_unless_the_trace_is_wrong(
    tiny_clip_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    traced_graph_is_wrong: bool,
) -> None:
    """The TorchScript exporter's graph runs faster; it is kept only when it gives torch's
    features at batch sizes it was not traced with, else the dynamo exporter's is used."""
    from searchengine.models import onnx_export

    activate(monkeypatch, tmp_path / "hf_home")  # an empty ONNX cache: a fresh export
    if traced_graph_is_wrong:
        real = onnx_export.check_session

        def batch_of_two_only(path: Path) -> object:
            session = real(path)
            run = session.run

            def checked(names: object, feeds: dict[str, np.ndarray]) -> object:
                if "pixels" in feeds and len(feeds["pixels"]) != 2:
                    raise RuntimeError("Reshape: the traced batch size was baked in")
                return run(names, feeds)

            session.run = checked  # type: ignore[method-assign]
            return session

        monkeypatch.setattr(onnx_export, "check_session", batch_of_two_only)
    spec = f"local-dir:{tiny_clip_dir}"
    onnx = _assert_parity(spec)
    export = read_export(parse_model_spec(spec))
    assert export is not None and export.verified
    expected = "dynamo" if traced_graph_is_wrong else "torchscript"
    assert export.manifest["exporters"] == {"image": expected, "text": "dynamo"}
    graph = export.folder / export.manifest["files"]["image"]
    weights = graph.with_name(graph.name + ".data")
    assert weights.stat().st_size > 0  # weights beside the graph, readable as it is
    assert weights.stat().st_mode & 0o777 == graph.stat().st_mode & 0o777
    onnx.close()
