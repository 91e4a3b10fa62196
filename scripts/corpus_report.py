"""Index the hostile corpus and print its verdict table (for docs/reliability.md).

    python scripts/corpus_report.py                 # the table, and the counts
    python scripts/corpus_report.py --write-table   # also pin tests/corpus_verdicts.json

The corpus and its checks are the ones ``tests/e2e/test_corpus.py`` runs: third-party
test images from PyPI sdists (downloaded once into ``.cache/corpus``) plus generated
files, each indexed with the shipped ``toy`` model through the real CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-table", action="store_true", help="pin the per-file verdicts")
    args = parser.parse_args()

    import PIL
    from corpus import TABLE, outcomes, run_corpus, verdict_table

    with tempfile.TemporaryDirectory() as tmp:
        run = run_corpus(Path(tmp))
        agree = sum(run.expected_ok(p) == (p in run.indexed) for p in [*run.origin, *run.generated])
        print(f"exit codes {run.exit_codes}; {run.scanned} scanned, {len(run.indexed)} indexed, "
              f"{len(run.failed)} failed; verdict agrees with the oracle or the generator for "
              f"{agree}; second run embedded {run.reports[1]['embedded']}")  # fmt: skip
        print(verdict_table(run))
        if args.write_table:
            files = dict(sorted(outcomes(run).items()))
            TABLE.write_text(
                json.dumps({"pillow": PIL.__version__, "files": files}, indent=1) + "\n"
            )
            print(f"wrote {TABLE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
