"""Captioned image sets for retrieval benchmarks, all loaded into one shape.

Every loader returns a :class:`RetrievalDataset`: image paths, captions, and for each
caption the index of its image (several captions per image allowed, as in Flickr30k and
COCO). Sources, picked by :func:`load_dataset`:

- a Karpathy-split JSON file (``dataset_flickr30k.json``, ``dataset_coco.json``)::

      {"images": [{"filename": "1000092795.jpg", "filepath": "val2014"?, "split": "test",
                   "sentences": [{"raw": "Two young guys ..."}, ...]}, ...]}

- a CSV file with ``image`` and ``caption`` columns, one row per caption;
- a folder of images with sidecar captions (``x.jpg`` + ``x.txt``, one caption a line);
- a toy world: a folder holding the generator's ``manifest.jsonl``, or ``toy:N:SEED``,
  which generates one (see :mod:`searchengine.toy.world`).

Relative image paths are resolved against ``image_root`` when given, else against the
folder of the JSON or CSV file. Missing images are an error, not a silent skip: a
benchmark on a different image set than intended gives numbers nobody can compare.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from searchengine.config import user_cache_dir
from searchengine.errors import DatasetError

__all__ = [
    "RetrievalDataset",
    "from_pairs",
    "load_captions_csv",
    "load_csv",
    "load_dataset",
    "load_karpathy",
    "load_sidecar",
    "load_toy",
    "toy_world",
]

KARPATHY_SPLITS = ("train", "restval", "val", "test")

CACHE_ENV = "SEARCHENGINE_CACHE_DIR"


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """``$SEARCHENGINE_CACHE_DIR``, else ``$XDG_CACHE_HOME/searchengine/bench``."""
    env = dict(os.environ) if env is None else env
    if folder := env.get(CACHE_ENV):
        return Path(folder).expanduser()
    return user_cache_dir(env) / "bench"


@dataclass(frozen=True)
class RetrievalDataset:
    """Images and their captions, ready to embed.

    Attributes:
        name: short label used in reports and cache file names.
        images: absolute image paths, each once.
        captions: every caption, in dataset order.
        caption_image: for each caption, the index in ``images`` of the image it describes.
        source: where it was loaded from, for reports.
        skipped: images found without any caption (sidecar folders), left out.
    """

    name: str
    images: tuple[str, ...]
    captions: tuple[str, ...]
    caption_image: tuple[int, ...]
    source: str = ""
    skipped: int = 0

    def __post_init__(self) -> None:
        if not self.images:
            raise DatasetError(f"{self.source or self.name}: no captioned images")
        if len(self.captions) != len(self.caption_image):
            raise DatasetError("each caption needs exactly one image index")
        counts = [0] * len(self.images)
        for index in self.caption_image:
            if not 0 <= index < len(self.images):
                raise DatasetError(f"caption image index {index} out of range")
            counts[index] += 1
        if 0 in counts:
            orphan = self.images[counts.index(0)]
            raise DatasetError(f"{self.source or self.name}: image {orphan} has no caption")

    def __len__(self) -> int:
        return len(self.images)

    def captions_of(self, image: int) -> list[str]:
        """The captions of image number ``image``."""
        return [c for c, i in zip(self.captions, self.caption_image, strict=True) if i == image]

    def fingerprint(self) -> str:
        """A hash of image paths, sizes and mtimes, captions and their pairing.

        Any edit to an image file or a caption changes it, so cached embeddings keyed
        by it are never reused for different data.
        """
        digest = hashlib.sha256()
        for path in self.images:
            try:
                stat = os.stat(path)
            except OSError as exc:
                raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        digest.update(json.dumps([self.captions, self.caption_image]).encode())
        return digest.hexdigest()


def from_pairs(
    pairs: Iterable[tuple[str, str]], *, name: str, source: str = "", skipped: int = 0
) -> RetrievalDataset:
    """A dataset from ``(image path, caption)`` pairs; images keep first-seen order."""
    index: dict[str, int] = {}
    captions: list[str] = []
    owners: list[int] = []
    for image, text in pairs:
        owners.append(index.setdefault(image, len(index)))
        captions.append(text)
    return RetrievalDataset(
        name, tuple(index), tuple(captions), tuple(owners), source=source, skipped=skipped
    )


def load_karpathy(
    path: str | Path, split: str = "test", image_root: str | Path | None = None
) -> RetrievalDataset:
    """Load a Karpathy-split JSON file (Flickr8k/30k, COCO).

    Args:
        path: the JSON file.
        split: ``test`` (default), ``val``, ``train``, ``restval`` or ``all``.
        image_root: folder the ``filepath``/``filename`` of each image is relative to
            (default: the JSON file's folder).

    Raises:
        DatasetError: unreadable or malformed file, an empty split, or missing images.
    """
    path = Path(path)
    data = read_json(path)
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise DatasetError(f"{path}: not a Karpathy-split file (no top-level 'images' list)")
    root = Path(image_root) if image_root is not None else path.parent
    pairs: list[tuple[str, str]] = []
    seen_splits: set[str] = set()
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "filename" not in record:
            raise DatasetError(f"{path}: image entry {number} has no 'filename'")
        seen_splits.add(str(record.get("split")))
        if split != "all" and record.get("split") != split:
            continue
        image = os.path.abspath(root / str(record.get("filepath") or "") / record["filename"])
        sentences = record.get("sentences") or []
        texts = [s.get("raw", "").strip() for s in sentences if isinstance(s, dict)]
        if not any(texts):
            raise DatasetError(f"{path}: image {record['filename']} has no 'raw' sentences")
        pairs.extend((image, text) for text in texts if text)
    if not pairs:
        found = ", ".join(sorted(seen_splits)) or "none"
        raise DatasetError(f"{path}: no images in split {split!r}; splits found: {found}")
    _check_images_exist((p for p, _ in pairs), path, "--images DIR")
    return from_pairs(pairs, name=f"{path.stem}-{split}", source=f"{path} (split {split})")


def load_csv(path: str | Path, image_root: str | Path | None = None) -> RetrievalDataset:
    """Load a CSV of ``image,caption`` rows (a header row naming both; more columns ignored).

    Several rows may name the same image: each is one more caption of it.

    Raises:
        DatasetError: unreadable file, missing columns, empty cells or missing images.
    """
    path = Path(path)
    pairs = [(row[0], row[1]) for row in load_captions_csv(path, image_root)]
    _check_images_exist((p for p, _ in pairs), path, "--images DIR")
    return from_pairs(pairs, name=path.stem, source=str(path))


def load_captions_csv(
    path: str | Path, image_root: str | Path | None = None, extra: Sequence[str] = ()
) -> list[tuple[str, ...]]:
    """Rows of a CSV with ``image`` and ``caption`` columns (plus ``extra`` ones).

    Image paths come back absolute (relative ones resolved against ``image_root``, else
    the CSV's folder). Each row is ``(image, caption, *extra values)``.

    Raises:
        DatasetError: unreadable file, a missing column, or an empty cell.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    wanted = ("image", "caption", *extra)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            missing = [c for c in wanted if c not in columns]
            if missing:
                found = ", ".join(reader.fieldnames or []) or "nothing"
                raise DatasetError(
                    f"{path}: needs a header row with columns {', '.join(wanted)}; "
                    f"missing {', '.join(missing)} (found {found})"
                )
            rows: list[tuple[str, ...]] = []
            for line, row in enumerate(reader, start=2):
                values = [(row.get(columns[c]) or "").strip() for c in wanted]
                if not all(values):
                    raise DatasetError(f"{path}:{line}: empty {wanted[values.index('')]!r}")
                values[0] = os.path.abspath(root / os.path.expanduser(values[0]))
                rows.append(tuple(values))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: not a UTF-8 CSV file ({exc})") from exc
    if not rows:
        raise DatasetError(f"{path}: no rows below the header")
    return rows


def load_sidecar(folder: str | Path) -> RetrievalDataset:
    """Images under ``folder`` with a ``.txt`` file of the same name: one caption a line.

    Images without a caption file are left out and counted in ``skipped``.

    Raises:
        DatasetError: no image under ``folder`` has a caption file.
    """
    from searchengine.ingest.scan import scan

    folder = Path(folder)
    pairs: list[tuple[str, str]] = []
    skipped = 0
    for entry in sorted(scan([folder]), key=lambda e: e.path):
        sidecar = Path(entry.path).with_suffix(".txt")
        try:
            lines = sidecar.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"cannot read captions {sidecar}: {exc}") from exc
        texts = [t.strip() for t in lines if t.strip()]
        if not texts:
            skipped += 1
        pairs.extend((entry.path, text) for text in texts)
    if not pairs:
        raise DatasetError(
            f"{folder}: no image has a caption file; put captions for photo.jpg in photo.txt, "
            "one a line"
        )
    name = folder.resolve().name or "folder"
    return from_pairs(pairs, name=name, source=str(folder), skipped=skipped)


def load_toy(folder: str | Path) -> RetrievalDataset:
    """A toy world written by :func:`searchengine.toy.world.generate`.

    Raises:
        DatasetError: the folder holds no readable ``manifest.jsonl``.
    """
    from searchengine.toy import world as toyworld

    folder = Path(folder)
    try:
        items = toyworld.load_manifest(folder)
    except FileNotFoundError as exc:
        raise DatasetError(f"{folder}: no {toyworld.MANIFEST_NAME}") from exc
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise DatasetError(f"{folder}: unreadable {toyworld.MANIFEST_NAME} ({exc})") from exc
    root = folder.resolve()
    pairs = [(str(root / item.path), text) for item in items for text in item.captions]
    _check_images_exist((p for p, _ in pairs), folder, "regenerate the toy world")
    return from_pairs(pairs, name=f"toy-{folder.resolve().name}", source=str(folder))


def toy_world(spec: str, data_dir: str | Path) -> RetrievalDataset:
    """The toy world a ``toy:N:SEED`` spec names, generated under ``data_dir`` once.

    Raises:
        DatasetError: the spec is malformed.
    """
    from searchengine.toy import world as toyworld

    parts = spec.split(":")
    try:
        if len(parts) != 3 or parts[0] != "toy":
            raise ValueError
        count, seed = int(parts[1]), int(parts[2])
        if count <= 0:
            raise ValueError
    except ValueError:
        raise DatasetError(
            f"bad toy world spec {spec!r}; use toy:N:SEED, e.g. toy:1000:4242"
        ) from None
    folder = Path(data_dir) / f"toy-n{count}-seed{seed}"
    if not (folder / toyworld.MANIFEST_NAME).exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Generate beside the target and rename: an interrupted run leaves no half world.
        scratch = Path(tempfile.mkdtemp(prefix=".toy-", dir=folder.parent))
        try:
            toyworld.generate(scratch, count, seed)
            os.replace(scratch, folder)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    dataset = load_toy(folder)
    return RetrievalDataset(
        f"toy-n{count}-seed{seed}",
        dataset.images,
        dataset.captions,
        dataset.caption_image,
        source=f"{spec} ({folder})",
    )


def load_dataset(
    source: str | Path,
    *,
    split: str = "test",
    image_root: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> RetrievalDataset:
    """Load any supported dataset, recognised by its form.

    Args:
        source: ``toy:N:SEED``, a ``.json`` (Karpathy) or ``.csv`` file, a toy-world
            folder (holding ``manifest.jsonl``) or a folder with sidecar captions.
        split: Karpathy split to use.
        image_root: folder relative image paths in a JSON or CSV file start from.
        data_dir: where ``toy:N:SEED`` worlds are generated (default: the bench cache).

    Raises:
        DatasetError: the source does not exist or is in no supported form.
    """
    text = str(source)
    if text.startswith("toy:"):
        if data_dir is None:
            data_dir = default_cache_dir() / "datasets"
        return toy_world(text, data_dir)
    path = Path(text).expanduser()
    if path.is_dir():
        from searchengine.toy.world import MANIFEST_NAME

        if (path / MANIFEST_NAME).exists():
            return load_toy(path)
        return load_sidecar(path)
    if not path.exists():
        raise DatasetError(
            f"no such dataset {text!r}; give a Karpathy .json, an image,caption .csv, "
            "a folder of images with .txt captions, or toy:N:SEED"
        )
    if path.suffix.lower() == ".json":
        return load_karpathy(path, split, image_root)
    if path.suffix.lower() == ".csv":
        return load_csv(path, image_root)
    raise DatasetError(f"{path}: unknown dataset format; use a .json, .csv or a folder")


def read_json(path: Path) -> object:
    """A JSON file's content; unreadable or invalid files raise ``DatasetError``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc


def _check_images_exist(paths: Iterable[str], source: Path, hint: str) -> None:
    unique = dict.fromkeys(paths)
    missing = [p for p in unique if not os.path.isfile(p)]
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} of {len(unique)} images not found, e.g. {missing[0]}; {hint}"
        )
