"""Caption scoring commands: score (how each model rates captions of one image) and
caption-eval (CLIPScore of BLIP's or given captions, against references and ratings)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from searchengine.cli.common import TqdmProgress, device_option, errors
from searchengine.cli.measure import MODELS, models_on
from searchengine.cli.where import region_options


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("captions", nargs=-1, required=True)
@MODELS
@region_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_option
def score(
    image: Path,
    captions: tuple[str, ...],
    models: tuple[str, ...],
    region: tuple[int, int, int, int] | None,
    region_method: str,
    as_json: bool,
    device: str | None,
) -> None:
    """How each model rates CAPTIONS of IMAGE: logit, cosine, softmax, CLIPScore.

    logit = logit_scale * cos; prob = softmax of the logits over the given
    captions; CLIP-S = 2.5 * max(cos, 0) with the caption prefixed
    "A photo depicts " (Hessel et al., 2021). With --region, only that part of
    the image is scored (FALIP by default: the model attends to it in context).

    \b
    Examples:
      searchengine score beach.jpg "a dog on a beach" "a cat on a sofa"
      searchengine score beach.jpg "a dog" "a ball" --region 40,60,300,280 -m toy
      searchengine score beach.jpg "a dog" "a cat" -m ViT-B-32:openai \\
          -m hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B --json
    """
    from searchengine.evaluation import score_captions

    with errors():
        specs, where = models_on(models, device)
        table = score_captions(
            image, captions, specs, device=where, region=region, region_method=region_method
        )
    click.echo(json.dumps(table.to_dict(), indent=2) if as_json else table.to_table())


@click.command("caption-eval")
@click.argument("images", nargs=-1, type=click.Path(exists=True, path_type=Path))
@MODELS
@click.option(
    "--captions",
    "captions_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Score the captions of this image,caption CSV instead of BLIP's.",
)
@click.option(
    "--refs",
    "refs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference captions (image,caption CSV or JSON): adds RefCLIPScore.",
)
@click.option(
    "--ratings",
    "ratings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Human ratings (image,caption,rating CSV or the clipscore Flickr8k JSON): "
    "adds Pearson, Spearman and Kendall tau-c.",
)
@click.option(
    "--images-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder image paths in the files are relative to [default: each file's].",
)
@click.option(
    "--captioner",
    default=None,
    metavar="NAME",
    help="BLIP captioning model [default Salesforce/blip-image-captioning-base].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@device_option
def caption_eval(
    images: tuple[Path, ...],
    models: tuple[str, ...],
    captions_file: Path | None,
    refs_file: Path | None,
    ratings_file: Path | None,
    images_root: Path | None,
    captioner: str | None,
    as_json: bool,
    device: str | None,
) -> None:
    """Caption IMAGES with BLIP and score each caption with CLIPScore per model.

    IMAGES are files or folders. With --captions or --ratings, the captions in
    the file are scored (IMAGES, if given, select which). With --refs (or the
    references inside a clipscore ratings JSON), RefCLIPScore is added.

    \b
    Examples:
      searchengine caption-eval photos/ -m ViT-B-32:openai \\
          -m hf-hub:UCSC-VLAA/ViT-L-14-CLIPS-Recap-DataComp-1B
      searchengine caption-eval a.jpg b.jpg --refs refs.csv -m ViT-B-32:openai
      searchengine caption-eval --ratings flickr8k/flickr8k.json -m ViT-B-32:openai
    """
    from searchengine.evaluation import caption_eval as run
    from searchengine.evaluation import load_captions, load_ratings, load_references

    if not (images or captions_file or ratings_file):
        raise click.UsageError("give IMAGES to caption, or a --captions or --ratings file")
    with errors():
        specs, where = models_on(models, device)
        ratings = load_ratings(ratings_file, images_root) if ratings_file else None
        refs = load_references(refs_file, images_root) if refs_file else None
        if refs is None and ratings is not None and ratings.references:
            refs = ratings.references
        report = run(
            [str(p) for p in images],
            specs,
            captions=load_captions(captions_file, images_root) if captions_file else None,
            ratings=ratings.judgements if ratings else None,
            references=refs,
            captioner=captioner,
            device=where,
            progress=TqdmProgress,
        )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.to_table())
