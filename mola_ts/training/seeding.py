"""Seeds, the caller's random streams, and the device of a training run.

Owns :func:`resolve_seed` (the one int seed a fit draws from an estimator's ``random_state``:
an int, a NumPy ``RandomState`` or ``Generator``, or None), :func:`seed_everything` (one seed
for Python, NumPy and torch, plus the generator that shuffles the batches),
:func:`preserve_global_rng` (a fit leaves the caller's random streams as they were) and
:func:`resolve_device` (``"auto"``: CUDA when available, else CPU).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["resolve_seed", "seed_everything", "preserve_global_rng", "resolve_device"]


#: seeds are drawn in [0, SEED_BOUND): they fit every generator the toolkit seeds
SEED_BOUND = 2**31 - 1


def resolve_seed(random_state, name: str = "random_state") -> int:
    """The one int seed a fit draws from ``random_state`` (scikit-learn's accepted kinds).

    Parameters
    ----------
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None
        An int is used as it is (the only kind that makes results reproducible across
        calls); a RandomState or Generator gives one draw (so it advances, as in
        scikit-learn); None draws a fresh seed from the operating system's entropy.
    name : str
        The parameter's name, for the error message.

    Returns
    -------
    int
        A seed in ``[0, 2**31 - 1)``.

    Raises
    ------
    TypeError
        For anything else (a float, a string, a bool, a torch Generator).
    ValueError
        For a negative int.

    Examples
    --------
    >>> import numpy as np
    >>> from mola_ts.training import resolve_seed
    >>> resolve_seed(7)
    7
    >>> resolve_seed(np.random.RandomState(0)) == resolve_seed(np.random.RandomState(0))
    True
    >>> isinstance(resolve_seed(np.random.default_rng(0)), int)
    True
    """
    if random_state is None:
        return int(np.random.SeedSequence().entropy % SEED_BOUND)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, SEED_BOUND))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, SEED_BOUND))
    if isinstance(random_state, (bool, np.bool_)) or \
            not isinstance(random_state, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int, a numpy RandomState or Generator, or None; got "
            f"{random_state!r} ({type(random_state).__name__})"
        )
    if random_state < 0:
        raise ValueError(f"{name} must be a non-negative int, got {random_state}")
    return int(random_state)


def seed_everything(random_state: int | np.random.RandomState | None) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch Generator for data shuffling.

    Parameters
    ----------
    random_state : int, numpy RandomState or Generator, or None
        The seed, through :func:`resolve_seed`: ``None`` draws a fresh seed
        (non-reproducible), like scikit-learn's ``random_state=None``; a RandomState or
        Generator draws the seed from itself.

    Returns
    -------
    torch.Generator
        A CPU generator seeded with the same seed (``initial_seed()`` returns it).

    Examples
    --------
    >>> import torch
    >>> from mola_ts.training import seed_everything
    >>> a = torch.randperm(5, generator=seed_everything(0))
    >>> b = torch.randperm(5, generator=seed_everything(0))
    >>> bool(torch.equal(a, b))
    True
    """
    seed = resolve_seed(random_state)
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds legacy global users too
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global random states on exit.

    A seeded fit reseeds the global generators (:func:`seed_everything`); wrapped in this, it
    leaves the caller's random streams as they were, so fitting a model does not change what
    the user's own code draws next.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what we keep
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and \
        torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The torch device to train on.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or None: CUDA when available, else CPU; otherwise the device asked for.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        When CUDA is asked for but not available.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available")
    return device
