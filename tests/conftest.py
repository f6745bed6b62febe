"""Test configuration: offline data home, one torch thread per worker, no progress bars."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
if not os.environ.get("MOLA_TS_DATA") and _SHARED.is_dir():
    # The developers' and CI's offline copies (../shared/datasets beside the checkout).
    os.environ["MOLA_TS_DATA"] = str(_SHARED)
os.environ.setdefault("MOLA_TS_NO_PROGRESS", "1")
torch.set_num_threads(1)


@pytest.fixture
def data_home() -> Path:
    """The data home holding ETTh1, ETTh2 and ILI (offline copy or the user's cache)."""
    from mola_ts.data import get_data_home

    return get_data_home()


@pytest.fixture
def small_backbone() -> dict:
    """The smallest transformer backbone the forecaster tests train."""
    from support import SMALL_BACKBONE

    return dict(SMALL_BACKBONE)


@pytest.fixture
def toy_frame():
    """A factory of small multivariate series (see ``support.toy_frame``)."""
    from support import toy_frame

    return toy_frame
