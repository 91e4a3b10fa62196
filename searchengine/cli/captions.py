"""Caption and question commands: caption, ask (image files, no collection needed)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import click

from searchengine.cli.common import device_option, errors, make_config
from searchengine.models.blip import DEFAULT_CAPTION_MODEL, DEFAULT_VQA_MODEL


@click.command()
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--model",
    "-m",
    default=DEFAULT_CAPTION_MODEL,
    show_default=True,
    help="BLIP captioning model: a Hugging Face repo id or a local folder.",
)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON: [{path, caption, model}].")
def caption(paths: Sequence[Path], model: str, device: str | None, as_json: bool) -> None:
    """Describe image files in words with BLIP, one line per file.

    Files are decoded as for indexing (EXIF orientation applied) and nothing is
    stored; `searchengine search --caption` captions search results and keeps
    those captions in the collection.

    \b
    Examples:
      searchengine caption beach.jpg
      searchengine caption ~/Pictures/*.jpg --json
      searchengine caption dog.png --model ./my-blip-finetune
    """
    from searchengine.captions import caption_files

    with errors():
        device = make_config(None, device=device).device
        captions = caption_files(paths, model, device)
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in captions], indent=2))
        return
    for item in captions:
        click.echo(f"{item.path}\t{item.caption}")


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("question")
@click.option(
    "--model",
    "-m",
    default=DEFAULT_VQA_MODEL,
    show_default=True,
    help="BLIP visual question answering model: a Hugging Face repo id or a local folder.",
)
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print {path, question, answer, model}.")
def ask(image: Path, question: str, model: str, device: str | None, as_json: bool) -> None:
    """Answer a QUESTION about an IMAGE file with BLIP.

    \b
    Examples:
      searchengine ask dog.jpg "Where is the dog in the image?"
      searchengine ask party.jpg "How many people are there?" --json
    """
    from searchengine.captions import answer_question

    with errors():
        device = make_config(None, device=device).device
        answer = answer_question(image, question, model, device)
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
        return
    click.echo(answer.answer)
