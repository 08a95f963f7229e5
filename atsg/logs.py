"""A command's logging: the console, the rule's log file, and how a failure is reported on both.

Every failure goes with its traceback to the rule's log (what Snakemake's "check log file(s)" points at, and
all a SLURM user gets); the console gets one line with the cause, and the log's path for unexpected errors.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
from pathlib import Path

from .errors import AtsgError

log = logging.getLogger("atsg")


def setup_logging(verbose: bool, logfile: str | None) -> logging.Handler | None:
    """Console and (with --log, rank 0 only) the rule's log file; returns the file's handler."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    rank = int(os.environ.get("RANK", 0)) if "WORLD_SIZE" in os.environ else 0
    to_file = None
    if logfile and rank == 0:  # under torchrun rank 0 adds to the launcher's log; the others only warn
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(logfile, mode="a" if "WORLD_SIZE" in os.environ else "w")
        handlers.append(to_file)
    level = logging.DEBUG if verbose else logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, handlers=handlers, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not verbose:  # GDAL's own messages repeat what our one-line errors say
        logging.getLogger("rasterio").setLevel(logging.WARNING)
    return to_file


def describe_error(exc: BaseException) -> str:
    """One line for the console: the cause, with the file where the system names one."""
    if isinstance(exc, AtsgError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"no space left on device{f' writing {exc.filename}' if exc.filename else ''}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def report_failure(
    command: str, exc: BaseException, to_file: logging.Handler | None, logfile: str | None, verbose: bool
) -> int:
    """Every failure: its traceback to the rule's log (or the console without one), one line to the console;
    returns the exit status (2 for errors atsg foresaw, 1 otherwise)."""
    line = f"{command}: error: {describe_error(exc)}"
    expected = isinstance(exc, AtsgError)
    if to_file is not None:
        record = log.makeRecord(
            log.name,
            logging.ERROR,
            __file__,
            0,
            "failed: %s",
            (describe_error(exc),),
            (type(exc), exc, exc.__traceback__),
        )
        to_file.handle(record)
        to_file.flush()
        print(line if expected else f"{line} (traceback in {logfile})", file=sys.stderr)
    else:
        if not expected or verbose:
            traceback.print_exception(exc, file=sys.stderr)
        print(line, file=sys.stderr)
    return 2 if expected else 1
