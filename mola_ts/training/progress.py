"""What a fit shows while it runs: an epoch bar and one line per stage, through ``tqdm.auto``.

Owns :func:`progress_enabled` (whether to show anything), :func:`epoch_bar` (the bar of one
:func:`~mola_ts.training.train` call) and :func:`stage` (a line naming the phase a fit enters:
``"foundation"``, ``"adaptation"``, ``"member 2/3"``, ``"segment 1/4 stopped at epoch 3"``).

Progress is shown when ``verbose > 0``, on any stream: ``tqdm.auto`` draws a widget in a Jupyter
notebook and a text bar elsewhere (also when stderr is not a terminal, e.g. a log file or a
notebook's captured stream). Set the environment variable ``MOLA_TS_NO_PROGRESS=1`` to silence
every bar and stage line (CI and the test suite do).
"""

from __future__ import annotations

import os
import sys

__all__ = ["NO_PROGRESS_ENV", "progress_enabled", "epoch_bar", "stage"]

#: environment variable that turns every progress bar and stage line off when set (not "" / "0")
NO_PROGRESS_ENV = "MOLA_TS_NO_PROGRESS"


def progress_enabled(verbose) -> bool:
    """Whether a fit with ``verbose`` shows progress (``verbose > 0`` and not switched off)."""
    if not verbose:
        return False
    return os.environ.get(NO_PROGRESS_ENV, "") in ("", "0")


def epoch_bar(total: int, verbose, *, desc: str = "training"):
    """A ``tqdm.auto`` bar over ``total`` epochs, or None when progress is off."""
    if not progress_enabled(verbose):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, file=sys.stderr)


def stage(message: str, verbose) -> None:
    """Write the stage line ``[mola-ts] message`` to stderr when progress is on.

    Goes through ``tqdm.write`` so an open bar is not broken by the line.
    """
    if not progress_enabled(verbose):
        return
    from tqdm.auto import tqdm

    tqdm.write(f"[mola-ts] {message}", file=sys.stderr)
