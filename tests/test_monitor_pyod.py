"""pyod's habits on every monitor: decision_scores_, labels_, fit_predict, predict_proba, finite
scores a ROC AUC can read, random_state kinds, and pickle/joblib round trips after scoring."""

import pickle

import joblib
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from test_monitor_mola import PARAMS, _process  # the small process and MOLA monitor

from mola_ts.monitor import DPCAMonitor, MOLAMonitor, PCAMonitor, ResidualMonitor

MONITORS = {
    "residual": lambda **kw: ResidualMonitor(**kw),
    "residual-mlp": lambda **kw: ResidualMonitor(predictor="mlp", hidden_size=8, **kw),
    "pca": lambda **kw: PCAMonitor(**kw),
    "pca-parametric": lambda **kw: PCAMonitor(limit="parametric", **kw),
    "pca-validation": lambda **kw: PCAMonitor(limit="validation", **kw),
    "dpca": lambda **kw: DPCAMonitor(n_lags=2, **kw),
    "mola": lambda **kw: MOLAMonitor(**{**PARAMS, **kw}),
}
SEEDED = ("residual-mlp", "mola")  # the monitors with a random_state parameter that matters
ONSET = 150


def _faulty(seed=1):
    run = _process(300, seed)
    run.iloc[ONSET:, 2] += 4.0
    run.iloc[ONSET:, 5] -= 4.0
    return run


@pytest.fixture(scope="module", params=sorted(MONITORS))
def fitted(request):
    train = _process(700, 0)
    return request.param, MONITORS[request.param]().fit(train), train


def test_training_scores_and_labels_follow_the_threshold(fitted):
    _, monitor, train = fitted
    assert monitor.decision_scores_.shape == (len(train),)
    assert np.isfinite(monitor.decision_scores_).all()
    np.testing.assert_array_equal(monitor.decision_scores_, monitor.score_samples(train))
    np.testing.assert_array_equal(
        monitor.labels_, (monitor.decision_scores_ > monitor.threshold_).astype(int))
    assert set(np.unique(monitor.labels_)) <= {0, 1}
    assert monitor.labels_.mean() < 0.1  # in-control training data rarely alarms


def test_fit_predict_returns_the_training_labels(fitted):
    name, monitor, train = fitted
    labels = MONITORS[name]().fit_predict(train)
    np.testing.assert_array_equal(labels, monitor.labels_)


def test_fit_predict_on_a_list_of_runs_concatenates_them(fitted):
    name, _, _ = fitted
    runs = [_process(400, 0), _process(350, 5)]
    monitor = MONITORS[name]()
    labels = monitor.fit_predict(runs)
    assert labels.shape == (750,)
    np.testing.assert_array_equal(
        monitor.decision_scores_,
        np.concatenate([monitor.score_samples(r) for r in runs]))


def test_scores_are_finite_and_rank_a_fault_run(fitted):
    _, monitor, _ = fitted
    run = _faulty()
    scores = monitor.score_samples(run)
    assert np.isfinite(scores).all()
    truth = (np.arange(len(run)) >= ONSET).astype(int)
    assert roc_auc_score(truth, scores) > 0.8


def test_predict_proba_is_pyods_two_columns(fitted):
    _, monitor, _ = fitted
    run = _faulty()
    proba = monitor.predict_proba(run)
    assert proba.shape == (len(run), 2)
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    fault = proba[:, 1]
    np.testing.assert_array_equal(
        fault, monitor.predict_fault_probability(run)["fault_probability"].to_numpy())
    # the fault's stretch is far more probably faulty than the normal stretch before it
    assert fault[ONSET:].mean() > 3 * fault[:ONSET].mean()
    truth = (np.arange(len(run)) >= ONSET).astype(int)
    assert roc_auc_score(truth, fault) > 0.8


def test_the_probability_is_refitted_with_the_model(fitted):
    name, _, train = fitted
    monitor = MONITORS[name]().fit(train)
    run = _faulty()
    before = monitor.predict_proba(run)
    monitor.fit(_process(700, 3))  # other normal data: other scores and calibration
    after = monitor.predict_proba(run)
    assert not np.array_equal(before, after)


def test_pickle_and_joblib_round_trips_after_scoring(fitted, tmp_path):
    _, monitor, _ = fitted
    run = _faulty()
    scores = monitor.score_samples(run)
    proba = monitor.predict_proba(run)
    for loaded in (pickle.loads(pickle.dumps(monitor)),
                   joblib.load(joblib.dump(monitor, tmp_path / "m.joblib")[0])):
        np.testing.assert_array_equal(loaded.score_samples(run), scores)
        np.testing.assert_array_equal(loaded.predict_proba(run), proba)
        np.testing.assert_array_equal(loaded.labels_, monitor.labels_)


@pytest.mark.parametrize("name", SEEDED)
def test_random_state_accepts_randomstate_and_generator(name):
    train = _process(400, 0)
    for state in (np.random.RandomState(0), np.random.default_rng(0)):
        monitor = MONITORS[name](random_state=state).fit(train)
        assert isinstance(monitor.seed_, int)
        assert np.isfinite(monitor.score_samples(train)).all()
    a = MONITORS[name](random_state=np.random.RandomState(3)).fit(train)
    b = MONITORS[name](random_state=np.random.RandomState(3)).fit(train)
    assert a.seed_ == b.seed_  # equal generators draw the same seed ...
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)  # ... the same model
    c = MONITORS[name](random_state=a.seed_ + 1).fit(train)
    assert not np.array_equal(a.decision_scores_, c.decision_scores_)


@pytest.mark.parametrize("name", SEEDED)
@pytest.mark.parametrize("bad", [1.5, "0", True, -1])
def test_random_state_of_another_kind_is_refused(name, bad):
    with pytest.raises((TypeError, ValueError), match="random_state"):
        MONITORS[name](random_state=bad).fit(_process(400, 0))


def test_a_monitor_seeded_by_a_generator_saves_its_drawn_seed(tmp_path):
    train = _process(400, 0)
    monitor = MONITORS["mola"](random_state=np.random.default_rng(1)).fit(train)
    loaded = MOLAMonitor.load(monitor.save(tmp_path / "m.pt"))
    assert loaded.random_state == monitor.seed_
    np.testing.assert_array_equal(loaded.score_samples(train), monitor.score_samples(train))
