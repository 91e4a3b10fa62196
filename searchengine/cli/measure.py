"""Measurement commands: bench (``score`` and ``caption-eval`` are in ``cli.scoring``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from searchengine.cli.common import (
    TqdmProgress,
    database_url_option,
    device_option,
    errors,
    index_dir_option,
    make_config,
)
from searchengine.cli.where import region_task
from searchengine.values import PRECISIONS

if TYPE_CHECKING:
    from searchengine.config import Config
    from searchengine.evaluation import BenchReport

MODELS = click.option(
    "--model",
    "-m",
    "models",
    multiple=True,
    metavar="SPEC",
    help="Model spec; repeat to compare models side by side "
    "[default: SEARCHENGINE_MODEL or ViT-B-32:openai].",
)


def _parse_ks(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(part) for part in value.split(",") if part.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if not ks or ks[0] < 1:
        raise click.BadParameter("give one or more K >= 1, e.g. 1,5,10")
    return ks


def models_on(models: Sequence[str], device: str | None) -> tuple[list[str], str]:
    """The model specs asked for (the configured one when none) and the device."""
    config = make_config(None, device=device)
    return list(models) or [config.model], config.device


@click.command()
@click.argument("dataset", required=False)
@MODELS
@click.option(
    "--k",
    "ks",
    default="1,5,10",
    show_default=True,
    callback=_parse_ks,
    help="Cut-offs K, comma-separated.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    help="Karpathy split: test, val, train, restval or all.",
)
@click.option(
    "--images",
    "image_root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder image paths in a .json/.csv dataset are relative to [default: the file's folder].",
)
@click.option(
    "--collection",
    "-c",
    default=None,
    help="Measure on an indexed collection instead of a dataset.",
)
@index_dir_option
@database_url_option
@click.option(
    "--pseudo-captions",
    is_flag=True,
    help="With --collection: caption every image with BLIP and use the captions as queries.",
)
@click.option(
    "--captioner",
    default=None,
    metavar="NAME",
    help="BLIP captioning model [default Salesforce/blip-image-captioning-base].",
)
@click.option(
    "--captions",
    "captions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --collection: an image,caption CSV to use as queries instead of BLIP.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (metrics as fractions).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (metrics as fractions).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write R@K curves to this PNG (needs matplotlib).",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Embedding cache [env SEARCHENGINE_CACHE_DIR; default ~/.cache/searchengine/bench].",
)
@click.option("--no-cache", is_flag=True, help="Neither read nor write cached embeddings.")
@click.option(
    "--task",
    type=click.Choice(["retrieval", "ground", "where", "part"]),
    default="retrieval",
    show_default=True,
    help="On toy worlds: ground picks the described object's box (CLIP models); where "
    "localises phrases with CLIPSeg (e.g. -m toy-seg); part asks for more like one "
    "object of a photo (precision@5).",
)
@click.option(
    "--region-method",
    "region_methods",
    default="falip,crop,circle,blur,none",
    show_default=True,
    metavar="LIST",
    help="With --task ground or part: region methods to compare, comma-separated.",
)
@click.option(
    "--boxes",
    default="exact",
    show_default=True,
    metavar="KIND[:F]",
    help="With --task ground or part: true boxes (exact), or boxes that miss their "
    "object: shifted:F (moved by F of their size), inside:F (each edge F inward), "
    "proposals:F (edges moved by up to F, IoU >= 0.5 kept).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.5,
    show_default=True,
    help="With --task where: peak probability from which a phrase counts as found.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images or captions per model call.",
)
@click.option(
    "--precision",
    "precisions",
    type=click.Choice(PRECISIONS),
    multiple=True,
    default=("fp32",),
    show_default=True,
    help="Image tower to measure; repeat for both (int8 is checked first on the dataset).",
)
@device_option
def bench(
    dataset: str | None,
    models: tuple[str, ...],
    ks: tuple[int, ...],
    split: str,
    image_root: Path | None,
    collection: str | None,
    index_dir: Path | None,
    database_url: str | None,
    pseudo_captions: bool,
    captioner: str | None,
    captions_file: Path | None,
    as_json: bool,
    as_csv: bool,
    plot: Path | None,
    cache_dir: Path | None,
    no_cache: bool,
    task: str,
    region_methods: str,
    boxes: str,
    threshold: float,
    batch_size: int,
    precisions: tuple[str, ...],
    device: str | None,
) -> None:
    """Recall@K and MRR of one or more models, text->image and image->text.

    DATASET is a Karpathy-split JSON (Flickr30k/COCO), an image,caption CSV, a
    folder of images with .txt captions, a toy-world folder, or toy:N:SEED.
    Recall follows CLIP_benchmark; embeddings are cached per (dataset, model).
    On a toy world, --task ground measures referring-expression accuracy per
    region method, --task where CLIPSeg localisation, and --task part "more
    like this part" (precision@5 per region method).

    \b
    Examples:
      searchengine bench toy:1000:4242 -m toy -m toy-large
      searchengine bench toy:500:5151 --task ground -m toy --region-method falip,crop,none
      searchengine bench toy:500:5151 --task ground -m toy --boxes shifted:0.3
      searchengine bench toy:500:5151 --task where -m toy-seg
      searchengine bench toy:500:5151 --task part -m toy --region-method falip,none
      searchengine bench dataset_flickr30k.json --images flickr30k-images \\
          -m ViT-B-32:openai -m hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B
      searchengine bench pairs.csv -m ViT-B-32:openai --k 1,5,10,50 --csv
      searchengine bench toy:1000:4242 -m toy --plot recall.png
      searchengine bench toy:1000:4242 -m toy --precision fp32 --precision int8
      searchengine bench --collection photos --pseudo-captions
    """
    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if task != "retrieval":
        region_task(
            task, dataset, models, region_methods, threshold, device, cache_dir, as_json, boxes
        )
        return
    if boxes != "exact":
        raise click.UsageError("--boxes applies to --task ground and part only")
    if (dataset is None) == (collection is None):
        raise click.UsageError("give a DATASET or --collection NAME (one of them)")
    if collection is not None and not (pseudo_captions or captions_file):
        raise click.UsageError("with --collection, add --pseudo-captions (or --captions FILE)")
    if plot is not None:
        from searchengine.evaluation.plot import matplotlib_available

        if not matplotlib_available():
            raise click.UsageError(
                "--plot needs matplotlib: pip install 'searchengine[plot]' (or matplotlib)"
            )
    from searchengine.evaluation import load_dataset, run_bench

    with errors():
        if collection is not None:
            config = make_config(index_dir, database_url, device=device)
            report = _collection_report(
                collection, config, models, ks, captioner, captions_file, image_root, plot
            )
        else:
            assert dataset is not None
            specs, where = models_on(models, device)
            data = load_dataset(
                dataset,
                split=split,
                image_root=image_root,
                data_dir=(cache_dir / "datasets") if cache_dir else None,
            )
            report = run_bench(
                data,
                specs,
                ks=ks,
                device=where,
                batch_size=batch_size,
                cache_dir=cache_dir,
                use_cache=not no_cache,
                curves=plot is not None,
                progress=TqdmProgress,
                precisions=precisions,
            )
        if plot is not None:
            report.plot(plot)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif as_csv:
        click.echo(report.to_csv(), nl=False)
    else:
        click.echo(report.to_table())
    if plot is not None:
        click.echo(f"wrote {plot}", err=True)


def _collection_report(
    name: str,
    config: Config,
    models: Sequence[str],
    ks: tuple[int, ...],
    captioner: str | None,
    captions_file: Path | None,
    image_root: Path | None,
    plot: Path | None,
) -> BenchReport:
    """``bench --collection``: BLIP (or given) captions of the collection's images as queries."""
    from searchengine.collection import Collection
    from searchengine.evaluation import bench_collection, load_captions

    queries: dict[str, list[str]] | None = None
    if captions_file is not None:
        queries = {}
        for path, text in load_captions(captions_file, image_root):
            queries.setdefault(path, []).append(text)
    with Collection.open(name, config) as coll:
        return bench_collection(
            coll,
            models,
            ks=ks,
            captioner=captioner,
            captions=queries,
            curves=plot is not None,
            progress=TqdmProgress,
        )
