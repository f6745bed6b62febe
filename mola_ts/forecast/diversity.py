"""How the members of a MoLA ensemble differ (the ``diversity`` parameter).

K adapters on one frozen foundation barely differ (uncertainty spec §5), so the mixture of
their Laplace approximations is little more than one of them. Three options, measured against
each other by ``mola-ts bench uncertainty``:

- ``"adapters"`` (default): K adapters with their own seeds (initialisation, shuffling) on the
  one foundation; the cheapest (one foundation, K adaptations);
- ``"bootstrap"``: the same, each adapter trained on a bootstrap resample of the training
  windows (drawn with the member's seed);
- ``"foundations"``: a true deep ensemble: member k adapts its own foundation, trained with the
  member's seed (K foundations and K adaptations).

This module owns :class:`DiversityMixin` (used by
:class:`~mola_ts.forecast.MoLAForecaster`) and :class:`Resampled`, a dataset of windows drawn
with replacement.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.base import clone

__all__ = ["DiversityMixin", "Resampled", "DIVERSITY"]

#: values of the ``diversity`` parameter
DIVERSITY = ("adapters", "bootstrap", "foundations")


class Resampled(torch.utils.data.Dataset):
    """Items ``indices`` of a window dataset (with repeats: a bootstrap resample)."""

    def __init__(self, base, indices: np.ndarray):
        self.base = base
        self.indices = torch.as_tensor(np.asarray(indices, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.indices)

    def get_batch(self, indices):
        return self.base.get_batch(self.indices[torch.as_tensor(indices, dtype=torch.long)])

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


class DiversityMixin:
    """Per-member foundations and training windows (module docstring)."""

    def _diversity(self) -> str:
        value = getattr(self, "diversity", "adapters")
        if value not in DIVERSITY:
            raise ValueError(f"diversity must be one of {DIVERSITY}, got {value!r}")
        if value == "foundations" and getattr(self, "foundation", None) is not None:
            raise ValueError("diversity='foundations' trains one foundation per member; it "
                             "cannot reuse the given foundation (set foundation=None)")
        return value

    def _member_foundation(self, member: int):
        foundations = getattr(self, "foundations_", None)
        return self.foundation_ if not foundations else foundations[member]

    def _member_train_set(self, member: int, train_set):
        if self._diversity() != "bootstrap":
            return train_set
        rng = np.random.default_rng(self._member_seed(member))
        return Resampled(train_set, rng.integers(0, len(train_set), len(train_set)))

    def _fit_member_foundations(self, train_values, val_values) -> None:
        """diversity='foundations': one more foundation per member after the first."""
        self.foundations_ = None
        if self._diversity() != "foundations" or self._n_members() == 1:
            return
        self.foundations_ = [self.foundation_]
        for k in range(1, self._n_members()):
            start = time.perf_counter()
            template = clone(self._foundation_template()).set_params(
                random_state=self._member_seed(k))
            self.foundations_.append(template.fit(train_values, y_val=val_values))
            self.foundation_seconds_ += time.perf_counter() - start

    # -- persistence: the foundation, and one per member with diversity="foundations" ---------
    @staticmethod
    def _foundation_state(foundation) -> dict:
        return {"params": foundation._params_to_save(), "state": foundation._state_to_save()}

    @staticmethod
    def _restored_foundation(saved: dict):
        from .neural import DirectForecaster

        foundation = DirectForecaster(**saved["params"])
        foundation._restore_state(saved["state"])
        return foundation

    def _state_to_save(self) -> dict:
        state = super()._state_to_save()
        state["foundation_"] = self._foundation_state(state.pop("foundation_"))
        extra = state.pop("foundations_", None)
        state["foundations_"] = None if not extra else [self._foundation_state(f)
                                                         for f in extra[1:]]
        return state

    def _restore_state(self, state: dict) -> None:
        state = dict(state)
        self.foundation_ = self._restored_foundation(state.pop("foundation_"))
        extra = state.pop("foundations_", None)
        self.foundations_ = None if not extra else [self.foundation_] + [
            self._restored_foundation(saved) for saved in extra]
        super()._restore_state(state)
