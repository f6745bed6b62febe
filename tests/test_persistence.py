import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator

from mola_ts.persistence import EstimatorFileError, SaveLoadMixin, save_estimator


class _Toy(SaveLoadMixin, BaseEstimator):
    def __init__(self, scale=2.0, names=("a", "b")):
        self.scale = scale
        self.names = names

    def fit(self, X):
        self.mean_ = np.asarray(X, dtype=float).mean(axis=0)
        self.n_seen_ = len(X)
        self.extra_ = {"w": torch.arange(3.0), "labels": ["x", "y"]}
        return self


class _Other(_Toy):
    pass


def test_round_trip_restores_params_and_state(tmp_path):
    toy = _Toy(scale=3.5).fit(np.arange(12.0).reshape(4, 3))
    path = toy.save(tmp_path / "toy.pt")
    back = _Toy.load(path)
    assert back.get_params() == {"scale": 3.5, "names": ["a", "b"]}  # tuples come back as lists
    assert isinstance(back.mean_, np.ndarray)
    np.testing.assert_array_equal(back.mean_, toy.mean_)
    assert back.n_seen_ == 4
    assert torch.equal(back.extra_["w"], torch.arange(3.0))
    assert back.extra_["labels"] == ["x", "y"]


def test_unfitted_save_raises(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        _Toy().save(tmp_path / "t.pt")


def test_other_class_newer_version_and_truncated_files_are_refused(tmp_path):
    toy = _Toy().fit(np.ones((3, 2)))
    path = toy.save(tmp_path / "toy.pt")
    with pytest.raises(EstimatorFileError, match="not a '_Other'"):
        _Other.load(path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "new.pt")
    with pytest.raises(EstimatorFileError, match="upgrade"):
        _Toy.load(tmp_path / "new.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(EstimatorFileError, match="not a readable"):
        _Toy.load(tmp_path / "cut.pt")
    torch.save({"hello": 1}, tmp_path / "foreign.pt")
    with pytest.raises(EstimatorFileError, match="magic"):
        _Toy.load(tmp_path / "foreign.pt")


def test_pickled_objects_are_never_loaded(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"magic": Evil()}, protocol=2))
    with pytest.raises(EstimatorFileError, match="not a readable"):
        _Toy.load(tmp_path / "evil.pt")


def test_unserialisable_params_and_state_raise_type_error(tmp_path):
    toy = _Toy(scale=lambda x: x).fit(np.ones((2, 2)))
    with pytest.raises(TypeError, match="scale"):
        toy.save(tmp_path / "t.pt")
    toy = _Toy().fit(np.ones((2, 2)))
    with pytest.raises(TypeError, match="cannot save"):
        save_estimator(toy, tmp_path / "t.pt", {"obj": object()})
