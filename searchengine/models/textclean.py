"""open_clip's text cleaning, torch-free: what every tokenizer does to a text first."""

from __future__ import annotations

import html
import string


def _needs_ftfy(text: str) -> bool:
    # ftfy.fix_text only changes non-ASCII text, HTML entities and control
    # characters. Skipping it for plain printable ASCII saves its ~80 ms import on
    # a cold query; the token parity test covers both branches.
    return not (text.isascii() and text.isprintable() and "&" not in text)


def _basic_clean(text: str) -> str:
    if _needs_ftfy(text):
        import ftfy

        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def _whitespace_clean(text: str) -> str:
    return " ".join(text.split()).strip()


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str) -> str:
    """open_clip's ``get_clean_fn(mode)`` applied to one text."""
    if mode == "lower":
        return _whitespace_clean(_basic_clean(text)).lower()
    if mode == "whitespace":
        return _whitespace_clean(_basic_clean(text))
    if mode == "canonicalize":
        text = _basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
        return " ".join(text.split()).strip()
    raise ValueError(f"unknown text cleaning {mode!r}")
