"""What image libraries say while one file is decoded, kept with that file.

Pillow reports many oddities of a file as Python warnings ("Corrupt EXIF data",
"Tag data larger than file") or log records ("More samples per pixel than can be
decoded"), and libtiff writes its errors straight to stderr, where they name no file:
the real cause of a "decoder error -2" went to the terminal while the file's record
said nothing useful, and one run over odd files printed dozens of unattributable
lines. Inside ``captured()`` all of these go into a list for the file being decoded
by this thread instead, so ingest can store them with its record, and a
failure's reason can name the cause.

``warnings.catch_warnings`` cannot do this: it swaps process-wide state, so decode
threads using it side by side restore each other's state and leak or lose messages.
Here one router is installed once (and again if something, such as a test runner,
puts its own in place) and looks up the current thread's collector; threads without
one print as before.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Warnings issued from these modules are always routed (never turned into errors or
# shown once per location by a global filter): they describe the file being decoded.
_MODULES = r"(PIL|pillow_heif|searchengine\.ingest)(\.|$)"

_local = threading.local()
_lock = threading.Lock()
_previous_showwarning: Any = None
_libtiff_handler: Any = None  # kept alive: libtiff holds a pointer to it


@contextmanager
def captured() -> Iterator[list[str]]:
    """Collect this thread's library warnings and libtiff errors into the list yielded."""
    _install()
    outer = getattr(_local, "messages", None)
    messages: list[str] = []
    _local.messages = messages
    try:
        yield messages
    finally:
        _local.messages = outer


def _collector() -> list[str] | None:
    return getattr(_local, "messages", None)


def note(text: str) -> None:
    """Add what a library said of the file being decoded to this thread's list (a
    library whose messages are caught by other means: LibRaw's, ``ingest.raw``)."""
    messages = _collector()
    if messages is not None:
        _add(messages, text)


def _route(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    messages = _collector()
    if messages is None:
        _previous_showwarning(message, category, filename, lineno, file, line)
    elif not issubclass(category, _ignored()):
        _add(messages, str(message))


def _add(messages: list[str], text: str) -> None:
    text = " ".join(text.split())
    if text and text not in messages:  # a plugin may say the same thing per tile or frame
        messages.append(text)


def _ignored() -> tuple[type[Warning], ...]:
    from PIL import Image

    # Pillow's own pixel limit warns from 89 MP; ingest applies its own limit instead.
    # Deprecations speak of the library, not of the file.
    return (Image.DecompressionBombWarning, DeprecationWarning)


class _LogFilter(logging.Filter):
    """On each of Pillow's loggers: records of a capturing thread go to its list."""

    def filter(self, record: logging.LogRecord) -> bool:
        messages = _collector()
        if messages is None or record.levelno < logging.WARNING:
            return True
        _add(messages, record.getMessage())
        return False


_log_filter = _LogFilter()


def _install() -> None:
    global _previous_showwarning
    filters = warnings.filters
    if (
        warnings.showwarning is _route
        and filters
        and filters[0][0] == "always"
        and getattr(filters[0][3], "pattern", None) == _MODULES
    ):
        return
    with _lock:
        if warnings.showwarning is not _route:
            _previous_showwarning = warnings.showwarning
            warnings.showwarning = _route
        warnings.filterwarnings("always", module=_MODULES)
        _install_log_filters()
        _install_libtiff_handler()


def _install_log_filters() -> None:
    """Filter every Pillow logger (a logger's filter does not see its children's records)."""
    from PIL import Image

    Image.init()  # imports every plugin, and so creates their loggers
    for name in ["PIL", *logging.Logger.manager.loggerDict]:
        if name == "PIL" or name.startswith("PIL."):
            logger = logging.getLogger(name)
            if _log_filter not in logger.filters:
                logger.addFilter(_log_filter)


def _install_libtiff_handler() -> None:
    """Route libtiff's error messages (a process-wide handler) to ``_route_libtiff``.

    Pillow silences libtiff's warnings but not its errors. The handler formats the
    message with the C library's ``vsnprintf``; where libtiff or libc cannot be found
    (not Linux, a static build), libtiff keeps printing as before.
    """
    global _libtiff_handler
    if _libtiff_handler is not None:
        return
    _libtiff_handler = False  # tried
    try:
        from PIL import _imaging  # noqa: F401  (maps Pillow's libtiff into the process)

        path = _mapped_library("libtiff")
        if path is None:
            return
        libtiff = ctypes.CDLL(path)
        libc = ctypes.CDLL(None)
        vsnprintf = libc.vsnprintf
        vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

        def on_error(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            buffer = ctypes.create_string_buffer(512)
            vsnprintf(buffer, len(buffer), fmt or b"", args)
            text = buffer.value.decode("utf-8", "replace")
            where = (module or b"").decode("utf-8", "replace")
            if where and "." not in where:  # a function name, not Pillow's dummy file name
                text = f"{where}: {text}"
            messages = _collector()
            if messages is None:
                sys.stderr.write(text + "\n")
            else:
                _add(messages, text)

        handler = handler_type(on_error)
        libtiff.TIFFSetErrorHandler.argtypes = [handler_type]
        libtiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
        libtiff.TIFFSetErrorHandler(handler)
        _libtiff_handler = handler
    except (OSError, AttributeError, ImportError):
        return


def _mapped_library(stem: str) -> str | None:
    """Path of the shared library named ``stem`` loaded into this process (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1]
                name = path.rsplit("/", 1)[-1]
                if name.startswith(stem + "-") or name.startswith(stem + ".so"):
                    return path
    except OSError:
        return None
    return None
