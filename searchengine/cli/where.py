"""Where-in-the-photo commands: where (CLIPSeg heatmaps) and ground (regions for a phrase)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from searchengine.cli.common import F, device_option, display_path, errors, print_results
from searchengine.models.clipseg import DEFAULT_SEG_MODEL

if TYPE_CHECKING:
    from searchengine.ranking.results import SearchResult

SEG_MODEL_HELP = (
    f"CLIPSeg model: a hub repo id, a local folder or toy-seg [default {DEFAULT_SEG_MODEL}]."
)


def threshold_option(func: F) -> F:
    return click.option(
        "--threshold",
        type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
        default=0.5,
        show_default=True,
        help="Peak probability from which a phrase counts as found.",
    )(func)


def _parse_region(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, int, int, int] | None:
    from searchengine.errors import QueryError
    from searchengine.region import parse_box

    if value is None:
        return None
    try:
        return parse_box(value)
    except QueryError as exc:
        raise click.BadParameter(str(exc)) from exc


def region_options(func: F) -> F:
    """``--region x0,y0,x1,y1`` and ``--region-method``, for commands that embed an image."""
    func = click.option(
        "--region-method",
        type=click.Choice(["falip", "crop", "circle", "blur", "none"]),
        default="falip",
        show_default=True,
        help="How the region is shown to the model: falip focuses the ViT's attention "
        "without editing the image; crop, circle and blur edit it; none ignores the region.",
    )(func)
    return click.option(
        "--region",
        metavar="X0,Y0,X1,Y1",
        default=None,
        callback=_parse_region,
        help="Use only this part of the image (pixels of the upright image).",
    )(func)


def where_options(func: F) -> F:
    """``--where``, ``--where-model`` and ``--out DIR`` for ``search``."""
    func = click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="With --where: write a heatmap over each result to this folder.",
    )(func)
    func = click.option(
        "--where-model", default=DEFAULT_SEG_MODEL, metavar="NAME", help=SEG_MODEL_HELP
    )(func)
    return click.option(
        "--where", is_flag=True, help="Also show where in each result QUERY is (CLIPSeg)."
    )(func)


def print_located(
    results: Sequence[SearchResult],
    query: str,
    model: str,
    out: Path | None,
    as_json: bool,
    device: str | None,
) -> None:
    """``search --where``: each result with its location, and overlays under ``out``."""
    from searchengine.overlay import write_pictures
    from searchengine.where import locate_files

    with errors():
        located = locate_files([r.path for r in results], query, model, device=device or "auto")
        pictures: list[str | None] = []
        for n, (result, item) in enumerate(zip(results, located, strict=True), start=1):
            if item is None or out is None:
                pictures.append(None)
                continue
            name = f"{n:02d}-{Path(result.path).stem}.png"
            pictures.append(str(write_pictures(item[0], [item[1]], out / name)[0]))
    records = []
    for result, item, picture in zip(results, located, pictures, strict=True):
        where_ = item[1].to_dict() if item is not None else None
        if where_ is not None and picture is not None:
            where_["picture"] = picture
        records.append(result.to_dict() | {"where": where_})
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    print_results(results, False)  # the usual lines, then one "where" line per result
    for n, record in enumerate(records, start=1):
        loc = record["where"]
        line = location_line(loc) if isinstance(loc, dict) else "cannot be read any more"
        click.echo(f"  #{n} {line}")
    if out is not None:
        click.echo(f"wrote {sum(p is not None for p in pictures)} overlays to {out}", err=True)


def location_line(loc: dict[str, object]) -> str:
    """One line a person reads: phrase, verdict, score, box and peak."""
    verdict = "found" if loc["found"] else "not found"
    box = loc.get("box")
    where_ = f"  box {','.join(map(str, box))}" if isinstance(box, list) else ""
    peak = loc["peak"]
    assert isinstance(peak, list)
    return f"{loc['text']}: {verdict}  score {loc['score']:.3f}{where_}  peak {peak[0]},{peak[1]}"


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("texts", nargs=-1, required=True)
@click.option("--model", "-m", default=DEFAULT_SEG_MODEL, metavar="NAME", help=SEG_MODEL_HELP)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a heatmap over the photo to this PNG (one file per phrase: NAME-1.png, ...).",
)
@click.option(
    "--logits", is_flag=True, help="With --out: write the raw logit map with a colour bar."
)
@threshold_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one entry per phrase.")
@device_option
def where(
    image: Path,
    texts: tuple[str, ...],
    model: str,
    out: Path | None,
    logits: bool,
    threshold: float,
    as_json: bool,
    device: str | None,
) -> None:
    """Show where in IMAGE each of TEXTS is (CLIPSeg), or say it is not there.

    For each phrase: found (peak probability at or above --threshold), the peak
    probability as score, the box around the region containing the peak and the peak
    itself, in the pixels of the upright image. IMAGE may be indexed or not.

    \b
    Examples:
      searchengine where photo.jpg "the walking dog"
      searchengine where kitchen.jpg "the white coffee cups" "a kettle" --out where.png
      searchengine where photo.jpg "a dog" --out logits.png --logits --json
      searchengine where toy.png "a red circle" -m toy-seg
    """
    from searchengine.overlay import write_pictures
    from searchengine.where import locate

    if logits and out is None:
        raise click.UsageError("--logits chooses what --out writes; add --out FILE.png")
    with errors():
        photo, locations = locate(
            image, list(texts), model, threshold=threshold, device=device or "auto"
        )
        written = write_pictures(photo, locations, out, logits=logits) if out else []
    records = [loc.to_dict() for loc in locations]
    for record, path in zip(records, written, strict=False):
        record["picture"] = str(path)
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for record in records:
        click.echo(location_line(record))
    for path in written:
        click.echo(f"wrote {display_path(str(path))}", err=True)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("text")
@click.option(
    "--box",
    "boxes",
    multiple=True,
    required=True,
    metavar="X0,Y0,X1,Y1",
    help="A candidate region (pixels of the upright image); repeat for each.",
)
@click.option(
    "--model", "-m", default=None, metavar="SPEC", help="CLIP model [default ViT-B-32:openai]."
)
@click.option(
    "--region-method",
    type=click.Choice(["falip", "crop", "circle", "blur", "none"]),
    default="falip",
    show_default=True,
    help="How each box is shown to the model.",
)
@click.option(
    "--negative",
    "negatives",
    multiple=True,
    metavar="TEXT",
    help="A description for the subtract step's bank (repeatable) [default: 30 everyday "
    "referring expressions].",
)
@click.option(
    "--no-subtract", is_flag=True, help="Rank boxes by raw cosine, without the subtract step."
)
@click.option("--json", "as_json", is_flag=True, help="Print every box's scores as JSON.")
@device_option
def ground(
    image: Path,
    text: str,
    boxes: tuple[str, ...],
    model: str | None,
    region_method: str,
    negatives: tuple[str, ...],
    no_subtract: bool,
    as_json: bool,
    device: str | None,
) -> None:
    """Which of the --box regions of IMAGE does TEXT describe?

    Each box is embedded as a region of the photo (FALIP by default: the ViT attends
    to it, the photo is not edited) and scored by its cosine with TEXT minus the box's
    mean cosine over a bank of other descriptions (the "subtract" step of the
    referring-expression protocol); the best box is named.

    \b
    Examples:
      searchengine ground photo.jpg "the dog on the left" --box 0,0,300,400 --box 300,0,640,400
      searchengine ground toy.png "a red circle" --box 90,60,210,170 --box 420,300,540,420 -m toy
      searchengine ground photo.jpg "the cup" --box 10,10,90,90 --box 100,10,190,90 \\
          --region-method crop --json
    """
    from searchengine.cli.common import make_config
    from searchengine.evaluation.grounding import DEFAULT_NEGATIVES, ground_file
    from searchengine.region import parse_box

    with errors():
        parsed = [parse_box(b) for b in boxes]
        config = make_config(None, device=device)
        result = ground_file(
            image,
            text,
            parsed,
            model or config.model,
            region_method,
            negatives=negatives or DEFAULT_NEGATIVES,
            subtract=not no_subtract,
            device=config.device,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    how = "cosine minus the mean over the negatives" if result.subtract else "cosine"
    click.echo(f"{result.text!r} in {display_path(str(image))} ({result.method}; score = {how})")
    for n, (box, cos, score, prob) in enumerate(
        zip(result.boxes, result.cosines, result.scores, result.probabilities, strict=True)
    ):
        mark = "  <- best" if n == result.best else ""
        coords = ",".join(map(str, box))
        click.echo(
            f"  #{n + 1}  {coords:<22} score {score:+.4f}  cos {cos:.4f}  p {prob:.3f}{mark}"
        )


def region_task(
    task: str,
    dataset: str | None,
    models: Sequence[str],
    region_methods: str,
    threshold: float,
    device: str | None,
    cache_dir: Path | None,
    as_json: bool,
    boxes: str = "exact",
) -> None:
    """``bench --task ground|where|part``: one library call, a table or JSON."""
    from searchengine.cli.common import make_config
    from searchengine.evaluation.regions import run_region_task
    from searchengine.models.clipseg import DEFAULT_SEG_MODEL

    if dataset is None:
        raise click.UsageError(f"--task {task} needs a toy world: toy:N:SEED or its folder")
    with errors():
        config = make_config(None, device=device)
        specs = list(models) or [DEFAULT_SEG_MODEL if task == "where" else config.model]
        report = run_region_task(
            task,
            dataset,
            specs,
            methods=region_methods.split(","),
            threshold=threshold,
            device=config.device,
            data_dir=(cache_dir / "datasets") if cache_dir else None,
            boxes=boxes,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_table())
