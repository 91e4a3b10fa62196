"""open_clip towers in ONNX Runtime: about twice torch's speed on a CPU, and no torch.

An open_clip model is exported once (``onnx_export.export_model``) into a folder
beside the Hugging Face cache::

    $HF_HOME/searchengine-onnx/<model-slug>/
        manifest.json           spec, versions, opset, verification, every file it came from
        image.onnx              image tower graph, dynamic batch
        text.onnx               text tower graph (dynamic length for causal CLIP text towers)
        *.onnx.data             each tower's weights, memory-mapped by ONNX Runtime
        token_embedding.npy     causal towers: the token table, memory-mapped, not in the graph
        bpe_simple_vocab_16e6.txt.gz | tokenizer.json   the torch-free tokenizer's data
        image.int8.onnx, int8.json   the int8 image tower and its check, once asked for
                                (``quantize``; the file exists only if it passed)
        texts-<digest>.npy      vectors of a fixed list of texts (``stored_text_vectors``)

Everything in this module is torch-free: finding a valid export, and running it,
import only onnxruntime, numpy, PIL (and ``tokenizers``/``regex`` for text). So a
search on a CPU whose model has an export never imports torch. An export is used
only when it was verified against torch (cosine >= ``MIN_COSINE`` on images and
texts, identical token ids, same pixels) and everything it was made from is unchanged
(weights, config, every tokenizer file, the packages that wrote it: ``provenance``);
otherwise ``runtime.load_onnx_encoder`` re-exports or falls back to torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchengine.errors import ModelError
from searchengine.models.base import l2_normalize
from searchengine.models.exports import Export, read_export
from searchengine.models.lite import Preprocess, TextTokenizer, load_tokenizer, preprocess_image
from searchengine.models.portable import PortablePreprocessor
from searchengine.models.spec import ModelSpec
from searchengine.values import PRECISIONS

log = logging.getLogger(__name__)

INT8_IMAGE = "image.int8.onnx"  # the reduced image tower (``quantize``), beside the export
# ``np.load`` parses each file's header with ``ast.literal_eval``. On CPython 3.11.7 (the
# project's) two threads in the ``ast`` module at once can fail with "SystemError: AST
# constructor recursion depth mismatch" (CPython gh-106905), and a cold search loads the
# token table in its warm-up thread while the main thread may already be encoding the
# query. Every ``np.load`` here takes this lock (a header read: microseconds).
_NPY_LOCK = threading.Lock()
TEXT_CHUNK = 256  # texts per text-tower call: bounds memory for long caption lists


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cuda_possible() -> bool:
    """False when no NVIDIA GPU can be present, decided without importing torch.

    Asking torch costs a second of imports; on a machine without NVIDIA device
    nodes (Linux) or on macOS the answer is known for free.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()
    return True  # other systems: let torch decide


def ready_onnx_encoder(
    spec: ModelSpec, *, precision: str = "fp32", one_shot: bool = False
) -> OnnxClipEncoder | None:
    """The ONNX encoder of ``spec`` when a verified export of its current weights exists.

    Never exports and never imports torch: None means ``runtime.load_onnx_encoder`` has
    work to do (an export, or a decision for torch). ``precision`` and ``one_shot`` are
    passed on to ``OnnxClipEncoder``.
    """
    export = read_export(spec)
    if export is None or not export.verified or precision not in PRECISIONS:
        return None
    return OnnxClipEncoder(export, precision=precision, one_shot=one_shot)


def int8_session_options(options: Any) -> Any:
    """Set ``options`` (``onnxruntime.SessionOptions``) for the int8 image tower's file.

    ``quantize.build_int8`` saves that graph already optimized (ONNX Runtime's extended
    level: fusions of its CPU kernels, nothing tied to one CPU's instructions), so a
    session opens it at the basic level: ViT-B-32-256's opens in ~0.15 s instead of
    ~0.45 s, and a photo costs the same. The check of a new tower opens it this way
    too, so what was checked is what runs.
    """
    import onnxruntime as ort

    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return options


class OnnxClipEncoder:
    """An exported open_clip model behind the ``Encoder`` protocol, on ONNX Runtime.

    Sessions are created on first use, so a search never loads the image tower and
    an ingest of unchanged files loads nothing.

    Args:
        export: the verified export.
        threads: cores a call may use (default: all this process may use).
        precision: ``fp32``, or ``int8`` for the reduced image tower ``quantize`` built
            and checked (the text tower is fp32 either way).
        one_shot: the process answers one query and ends (a command line search or
            ``similar``): the towers' weights are not pre-packed for speed, which
            costs more time when a session opens (ViT-B-32's image tower: ~0.45 s of
            CPU) than one query gains. An ingest (``image_lanes``) still gets a
            pre-packed image tower: it runs the tower for every new photo.
    """

    def __init__(
        self,
        export: Export,
        threads: int | None = None,
        *,
        precision: str = "fp32",
        one_shot: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}")
        manifest = export.manifest
        self.spec = str(manifest["spec"])
        self.dim = int(manifest["dim"])
        self.image_size = int(manifest["image_size"])
        self.logit_scale = float(manifest["logit_scale"])
        self.device = "cpu"
        self.runtime = "onnx"
        self.precision = precision
        self.folder = export.folder
        self.image_file = str(manifest["files"]["image"])  # the fp32 tower's graph
        self._one_shot = one_shot
        self._folder = export.folder
        self._manifest = manifest
        self._preprocess = Preprocess.from_dict(manifest["preprocess"])
        self._threads = threads or cpu_count()
        self._image_threads = self._threads
        self._ingesting = False  # ``image_lanes`` was asked: the image tower is pre-packed
        self._lock = threading.Lock()  # guards opening and replacing sessions
        self._tokenizer_lock = threading.Lock()  # one tokenizer, whichever thread asks first
        self._sessions: dict[str, Any] = {}  # "image", "text": opened on first use
        self._tokenizer: TextTokenizer | None = None
        self._embedding: np.ndarray | None = None

    def image_lanes(self, most: int) -> int:
        """Switch image calls to one thread each; return how many to run side by side.

        A call on N threads splits every layer N ways and waits for the slowest part,
        and while an ingest's decoding shares the cores that part is often one the
        scheduler paused. N one-thread calls at once never wait for each other, so
        small photos ingest faster (``docs/benchmarks.md``). ``most`` 1 (or one core)
        switches back: a single query image is faster on all cores.
        """
        lanes = max(1, min(most, self._threads))
        threads = 1 if lanes > 1 else self._threads
        if threads == self._image_threads and self._ingesting:
            return lanes  # not waiting for a session that is opening (``warm_image``)
        with self._lock:
            if threads != self._image_threads or (self._one_shot and not self._ingesting):
                self._sessions.pop("image", None)  # opened again, as an ingest runs it
            self._image_threads = threads
            self._ingesting = True
        return lanes

    def _session(self, name: str) -> Any:
        """The ``name`` tower's session, opened on first use.

        Under a lock: the first calls of an ingest's lanes (or of a server's requests)
        come at once, and each would otherwise open its own session.
        """
        with self._lock:
            if name not in self._sessions:
                self._sessions[name] = self._open(name)
            return self._sessions[name]

    def _open(self, name: str) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._image_threads if name == "image" else self._threads
        options.inter_op_num_threads = 1
        # Busy-waiting worker threads would take the cores the decode threads of an
        # ingest need; without spinning ORT loses ~1 ms a call and gives them back.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        # The arena keeps freed activation buffers for reuse and rounds growth up to
        # powers of two: ~120 MB more peak memory for ViT-B-32 at no measurable speed.
        options.enable_cpu_mem_arena = False
        if name == "text":
            # The extended fusions double the text tower's opening (~30 ms more for
            # ViT-B-32's) and save no time on a query (~2 % on batches of 64 texts).
            # Every text session skips them, so that a one-shot search and a server
            # give the same vectors to the last bit (they differ by ~1e-6 otherwise).
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if self._one_shot and (name == "text" or not self._ingesting):
            options.add_session_config_entry("session.disable_prepacking", "1")
            if name == "image" and self.precision == "fp32":
                # The "all" level's layout changes cost ~0.1 s more to open than one
                # photo gains. The vectors differ from an ingest's by at most ~1e-7.
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        path = self._folder / self._manifest["files"][name]
        if name == "image" and self.precision == "int8":
            int8_session_options(options)
            path = self._folder / INT8_IMAGE
            if not path.is_file():
                raise ModelError(
                    f"the int8 image tower of {self.spec} is missing (its ONNX export was "
                    "made again); run `searchengine index` on the collection to rebuild "
                    "and check it"
                )
        try:
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime's own types: a damaged or cut-short file
            raise ModelError(
                f"the {name} tower of {self.spec} cannot be opened from {path} "
                f"({str(exc).splitlines()[0][:300]}); delete {self._folder} and the next "
                "run makes the ONNX export again"
            ) from exc

    def warm_text(self) -> None:
        """Open the text tower and load the tokenizer now instead of at the first query."""
        self._session("text")  # ONNX Runtime opens it without holding the GIL
        self.tokenize(["warm-up"])
        if self._manifest["text"]["mode"] == "causal":
            self._token_table()

    def warm_image(self) -> None:
        """Open the image tower now (with the threads ``image_lanes`` set), so an ingest
        opens it while its first photos decode instead of after."""
        self._session("image")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return preprocess_image(image, self._preprocess)

    def portable_preprocessor(self) -> PortablePreprocessor:
        """This model's ``preprocess`` without the model (for cluster ingest)."""
        return PortablePreprocessor(self.image_size, self._preprocess)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        session = self._session("image")
        if self.precision == "int8":
            # Activations are quantized with one scale per call, so in a batch each
            # photo's vector would depend on the others. One photo a call keeps it its
            # own (the same photo, the same vector), at no cost in speed: measured as
            # fast as batches of 8 in one-thread calls side by side.
            rows = [session.run(None, {"pixels": batch[i : i + 1]})[0] for i in range(len(batch))]
            return l2_normalize(np.concatenate(rows))
        return l2_normalize(session.run(None, {"pixels": batch})[0])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))

    def stored_text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """``encode_texts(texts)`` for a fixed list the product asks again and again
        (the calibration's null queries), kept beside the export after the first time.

        An ingest then needs no text tower at all: opening ViT-B-32's costs ~0.3 s of
        CPU and ~200 MB. The file belongs to this export (a new export is a new folder)
        and is named by the texts, so a changed list is a new file. A folder that
        cannot be written (a read-only cache) only means the vectors are made each time.
        """
        path = self._stored_texts_path(texts)
        try:
            with _NPY_LOCK:
                vectors = np.load(path)
            if vectors.shape == (len(texts), self.dim) and vectors.dtype == np.float32:
                return np.ascontiguousarray(vectors)
        except (OSError, ValueError):
            pass
        vectors = self.encode_texts(texts)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            with open(tmp, "wb") as out:
                np.save(out, vectors)
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
        return vectors

    def has_stored_text_vectors(self, texts: Sequence[str]) -> bool:
        """Whether ``stored_text_vectors(texts)`` will be answered without the text tower."""
        return self._stored_texts_path(texts).is_file()

    def _stored_texts_path(self, texts: Sequence[str]) -> Path:
        digest = hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()[:16]
        return self._folder / f"texts-{digest}.npy"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            self._encode_tokens(self.tokenize(texts[i : i + TEXT_CHUNK]))
            for i in range(0, len(texts), TEXT_CHUNK)
        ]
        return l2_normalize(np.concatenate(parts))

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids (N, context_length), int64, as open_clip's tokenizer makes them."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                settings = self._manifest.get("tokenizer")
                self._tokenizer = (
                    load_tokenizer(self._folder, settings)
                    if settings
                    else _TorchTokenizer(self.spec)
                )
        return self._tokenizer(list(texts))

    def _encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        text = self._manifest["text"]
        if text["mode"] != "causal":
            return np.asarray(self._session("text").run(None, {"tokens": tokens})[0])
        # A causal tower's output at the pooled (end) token does not depend on the
        # padding after it, so the padding is cut: a 6-token query costs 6/77 of
        # the full context.
        if text["pool"] == "eos":
            ends = (tokens == int(text["eos_id"])).argmax(axis=1)
        else:
            ends = tokens.argmax(axis=1)
        tokens = np.ascontiguousarray(tokens[:, : int(ends.max()) + 1])
        embedded = np.ascontiguousarray(self._token_table()[tokens], dtype=np.float32)
        session = self._session("text")
        return np.asarray(session.run(None, {"embeddings": embedded, "tokens": tokens})[0])

    def _token_table(self) -> np.ndarray:
        if self._embedding is None:
            with _NPY_LOCK:
                if self._embedding is None:
                    path = self._folder / self._manifest["files"]["embedding"]
                    self._embedding = np.load(path, "r")
        return self._embedding

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
        self._embedding = None


class _TorchTokenizer:
    """open_clip's own tokenizer, for exports whose tokenizer has no torch-free twin."""

    def __init__(self, spec: str) -> None:
        import open_clip

        from searchengine.models.spec import parse_model_spec

        self._tokenizer = open_clip.get_tokenizer(parse_model_spec(spec).open_clip_name)
        self.context_length = int(getattr(self._tokenizer, "context_length", 77))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._tokenizer(list(texts)).numpy(), dtype=np.int64)
