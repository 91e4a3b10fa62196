"""The ``searchengine`` command line: parse options, call one library method, print.

Heavy modules (torch, open_clip, faiss) are imported inside commands, so ``--help``
answers instantly. Commands live in one module per area and are registered here.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import click

from searchengine.cli import (
    captions,
    collection,
    demo,
    index,
    manage,
    measure,
    scoring,
    serve,
    where,
)


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
    index.index,
    collection.search,
    collection.similar,
    collection.status,
    demo.demo,
    manage.collections,
    manage.remove,
    captions.caption,
    captions.ask,
    measure.bench,
    scoring.score,
    scoring.caption_eval,
    serve.serve,
    where.where,
    where.ground,
):
    main.add_command(command)


def run() -> NoReturn:
    """The ``searchengine`` console script: ``main``, then a quick exit.

    Python's own shutdown tears down every module and extension (ONNX Runtime's
    environment, FAISS, SQLAlchemy) after the answer is printed: ~0.08 s of a ~0.5 s
    search and ~0.25 s after an index, measured. Every command closes its catalog,
    index and model sessions itself, so nothing is left for that teardown to save:
    once the exit handlers have run (temporary folders, Ray, logging) and the output
    is flushed, the process ends. Where a worker thread is still running, or the
    output cannot be flushed (a closed pipe), Python's own exit is kept.
    """
    code: str | int | None = 0
    try:
        main()
    except SystemExit as done:  # standalone click always ends so
        code = done.code
    quick_exit(code)


def quick_exit(code: str | int | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without the interpreter's teardown."""
    main_thread = threading.main_thread()
    running = any(t is not main_thread and not t.daemon for t in threading.enumerate())
    if running or isinstance(code, str):
        sys.exit(code)  # waits for the threads / prints the message, as Python does
    atexit._run_exitfuncs()  # once: they are cleared after running
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(code)  # Python reports the unflushable output and sets its exit status
    os._exit(code or 0)


if __name__ == "__main__":
    run()
