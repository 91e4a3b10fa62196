"""Dataset loaders: Karpathy JSON, CSV, sidecar captions, toy world; caption-eval files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from imagegen import solid

from searchengine.errors import DatasetError
from searchengine.evaluation.caption_files import load_ratings, load_references
from searchengine.evaluation.datasets import (
    RetrievalDataset,
    load_csv,
    load_dataset,
    load_karpathy,
    load_sidecar,
    toy_world,
)


def karpathy_entry(imgid: int, filename: str, split: str, raws: list[str], **extra) -> dict:
    """One image as in Karpathy's dataset_flickr30k.json (tokens, ids and all)."""
    sentences = [
        {
            "tokens": raw.lower().rstrip(".").split(),
            "raw": raw,
            "imgid": imgid,
            "sentid": imgid * 5 + i,
        }
        for i, raw in enumerate(raws)
    ]
    return {
        "sentids": [s["sentid"] for s in sentences],
        "imgid": imgid,
        "sentences": sentences,
        "split": split,
        "filename": filename,
        **extra,
    }


@pytest.fixture
def flickr(tmp_path: Path) -> Path:
    images = tmp_path / "flickr30k-images"
    for name in ("1000092795.jpg", "10002456.jpg", "1000268201.jpg"):
        solid(images / name, (10, 20, 30))
    data = {
        "images": [
            karpathy_entry(0, "1000092795.jpg", "train", ["Two young guys outside."]),
            karpathy_entry(
                1,
                "10002456.jpg",
                "test",
                ["Several men in hard hats.", "Workers look down.", "Two men on a scaffold."],
            ),
            karpathy_entry(2, "1000268201.jpg", "test", ["A child in a pink dress."]),
        ],
        "dataset": "flickr30k",
    }
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text(json.dumps(data))
    return path


def test_karpathy_test_split(flickr: Path):
    data = load_karpathy(flickr, image_root=flickr.parent / "flickr30k-images")
    assert [os.path.basename(p) for p in data.images] == ["10002456.jpg", "1000268201.jpg"]
    assert data.captions == (
        "Several men in hard hats.",
        "Workers look down.",
        "Two men on a scaffold.",
        "A child in a pink dress.",
    )
    assert data.caption_image == (0, 0, 0, 1)
    assert data.captions_of(1) == ["A child in a pink dress."]
    assert all(os.path.isabs(p) for p in data.images)
    assert len(load_karpathy(flickr, "all", flickr.parent / "flickr30k-images")) == 3


def test_karpathy_coco_filepath(tmp_path: Path):
    solid(tmp_path / "val2014" / "COCO_val2014_000000391895.jpg", (1, 2, 3))
    entry = karpathy_entry(
        0, "COCO_val2014_000000391895.jpg", "test", ["A man riding a bike."], filepath="val2014"
    )
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": [entry]}))
    data = load_dataset(tmp_path / "dataset_coco.json")
    assert data.images == (str(tmp_path / "val2014" / "COCO_val2014_000000391895.jpg"),)


def test_karpathy_errors_say_what_to_do(flickr: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="no images in split 'tset'; splits found: test, train"):
        load_karpathy(flickr, "tset", flickr.parent / "flickr30k-images")
    with pytest.raises(DatasetError, match=r"2 of 2 images not found.*--images DIR"):
        load_karpathy(flickr)  # images are in a subfolder, not beside the JSON
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_dataset(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match="not a Karpathy-split file"):
        load_dataset(tmp_path / "other.json")


def test_csv_with_several_captions_per_image(tmp_path: Path):
    solid(tmp_path / "img" / "a.png", (255, 0, 0))
    solid(tmp_path / "img" / "b.png", (0, 0, 255))
    (tmp_path / "pairs.csv").write_text(
        'image,caption\nimg/a.png,a red square\nimg/b.png,"blue, all blue"\nimg/a.png,red\n'
    )
    data = load_dataset(tmp_path / "pairs.csv")
    assert [os.path.basename(p) for p in data.images] == ["a.png", "b.png"]
    assert data.captions == ("a red square", "blue, all blue", "red")
    assert data.caption_image == (0, 1, 0)


def test_csv_errors_name_the_line(tmp_path: Path):
    (tmp_path / "cols.csv").write_text("path,text\nx.jpg,hi\n")
    with pytest.raises(DatasetError, match="missing image, caption"):
        load_csv(tmp_path / "cols.csv")
    (tmp_path / "empty.csv").write_text("image,caption\nx.jpg,hi\ny.jpg,\n")
    with pytest.raises(DatasetError, match=r"empty.csv:3: empty 'caption'"):
        load_csv(tmp_path / "empty.csv")
    (tmp_path / "gone.csv").write_text("image,caption\nx.jpg,hi\n")
    with pytest.raises(DatasetError, match="1 of 1 images not found"):
        load_csv(tmp_path / "gone.csv")


def test_sidecar_folder(tmp_path: Path):
    solid(tmp_path / "a.jpg", (255, 0, 0))
    (tmp_path / "a.txt").write_text("a red photo\n\n  red again \n")
    solid(tmp_path / "sub" / "b.png", (0, 255, 0))
    (tmp_path / "sub" / "b.txt").write_text("green")
    solid(tmp_path / "c.jpg", (0, 0, 255))  # no caption file
    data = load_dataset(tmp_path)
    assert [os.path.relpath(p, tmp_path) for p in data.images] == ["a.jpg", "sub/b.png"]
    assert data.captions == ("a red photo", "red again", "green")
    assert data.caption_image == (0, 0, 1)
    assert data.skipped == 1


def test_sidecar_folder_without_captions(tmp_path: Path):
    solid(tmp_path / "a.jpg", (255, 0, 0))
    with pytest.raises(DatasetError, match=r"put captions for photo\.jpg in photo\.txt"):
        load_sidecar(tmp_path)


def test_toy_spec_generates_once_and_reads_the_folder(tmp_path: Path):
    data = toy_world("toy:12:4242", tmp_path)
    assert (len(data.images), len(data.captions), data.name) == (12, 12, "toy-n12-seed4242")
    folder = tmp_path / "toy-n12-seed4242"
    stamp = (folder / "manifest.jsonl").stat().st_mtime_ns
    again = load_dataset("toy:12:4242", data_dir=tmp_path)
    assert (folder / "manifest.jsonl").stat().st_mtime_ns == stamp  # not regenerated
    assert again.captions == data.captions and again.images == data.images
    assert load_dataset(folder).captions == data.captions  # the folder form
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".toy-")]


@pytest.mark.parametrize("spec", ["toy:", "toy:0:1", "toy:ten:1", "toy:5:1:2"])
def test_bad_toy_spec(spec: str, tmp_path: Path):
    with pytest.raises(DatasetError, match="use toy:N:SEED"):
        load_dataset(spec, data_dir=tmp_path)


def test_unknown_source(tmp_path: Path):
    with pytest.raises(DatasetError, match="no such dataset"):
        load_dataset(tmp_path / "nothing.json")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_dataset(tmp_path / "x.parquet")


def test_fingerprint_follows_files_and_captions(tmp_path: Path):
    image = solid(tmp_path / "a.png", (1, 2, 3))
    first = RetrievalDataset("d", (str(image),), ("a",), (0,))
    same = RetrievalDataset("d", (str(image),), ("a",), (0,))
    assert first.fingerprint() == same.fingerprint()
    assert RetrievalDataset("d", (str(image),), ("b",), (0,)).fingerprint() != first.fingerprint()
    before = first.fingerprint()
    solid(image, (9, 9, 9))
    os.utime(image, ns=(1, 1))  # an edited file, even one whose size did not change
    assert first.fingerprint() != before


def test_dataset_invariants():
    with pytest.raises(DatasetError, match="no caption"):
        RetrievalDataset("d", ("/a.jpg", "/b.jpg"), ("x",), (0,))
    with pytest.raises(DatasetError, match="out of range"):
        RetrievalDataset("d", ("/a.jpg",), ("x",), (3,))


def test_references_and_ratings_files(tmp_path: Path):
    (tmp_path / "refs.csv").write_text("image,caption\na.jpg,a dog\na.jpg,a  brown dog \n")
    refs = load_references(tmp_path / "refs.csv")
    assert refs == {str(tmp_path / "a.jpg"): ["a dog", "a brown dog"]}
    (tmp_path / "refs.json").write_text(json.dumps({"a.jpg": "a dog", "b.jpg": ["x", "y"]}))
    assert load_references(tmp_path / "refs.json")[str(tmp_path / "b.jpg")] == ["x", "y"]
    (tmp_path / "r.csv").write_text("image,caption,rating\na.jpg,a dog,4\na.jpg,a cat,1.5\n")
    ratings = load_ratings(tmp_path / "r.csv")
    assert [(r.caption, r.rating) for r in ratings.judgements] == [("a dog", 4.0), ("a cat", 1.5)]
    (tmp_path / "bad.csv").write_text("image,caption,rating\na.jpg,a dog,good\n")
    with pytest.raises(DatasetError, match="'good' is not a number"):
        load_ratings(tmp_path / "bad.csv")


def test_clipscore_flickr8k_ratings_json(tmp_path: Path):
    data = {
        "1": {
            "image_path": "Flicker8k_Dataset/x.jpg",
            "ground_truth": ["a dog runs", "a  brown dog"],
            "human_judgement": [
                {"caption": "a dog", "rating": 4.0},
                {"caption": "a dog", "rating": 3.0},
                {"caption": "a car", "rating": float("nan")},
            ],
        }
    }
    (tmp_path / "flickr8k.json").write_text(json.dumps(data))
    ratings = load_ratings(tmp_path / "flickr8k.json")
    image = str(tmp_path / "Flicker8k_Dataset" / "x.jpg")
    assert [(r.image, r.caption, r.rating) for r in ratings.judgements] == [
        (image, "a dog", 4.0),
        (image, "a dog", 3.0),
    ]  # the NaN judgement is skipped, as the CLIPScore authors' script does
    assert ratings.references == {image: ["a dog runs", "a brown dog"]}
