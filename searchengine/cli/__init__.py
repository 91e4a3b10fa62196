"""The ``searchengine`` command line: parse options, call one library method, print.

Heavy modules (torch, open_clip, faiss) are imported inside commands, so ``--help``
answers instantly. Commands live in one module per area and are registered here.
"""

from __future__ import annotations

import click

from searchengine.cli import captions, collection, demo, manage, measure, serve, where


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="searchengine")
def main() -> None:
    """Find photos by describing them.

    \b
    Examples:
      searchengine index ~/Pictures
      searchengine search "kids building a sandcastle"
      searchengine similar ~/Pictures/beach.jpg
      searchengine status --failed
      searchengine collections
    """


for command in (
    collection.index,
    collection.search,
    collection.similar,
    collection.status,
    demo.demo,
    manage.collections,
    manage.remove,
    captions.caption,
    captions.ask,
    measure.bench,
    measure.score,
    measure.caption_eval,
    serve.serve,
    where.where,
    where.ground,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
