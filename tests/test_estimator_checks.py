"""scikit-learn's estimator checks on every estimator of the toolkit, small instances.

Each expected failure is listed with its reason. They fall into a few kinds, on purpose:

- time series: a 1-D input is one variable (sktime's convention), not refused; a sample's
  score or forecast depends on the samples before it, so reordering or subsetting rows changes
  it; object and complex dtypes are refused, never cast silently;
- size: scikit-learn's check data have 10-30 rows, fewer than cross-fitting folds (or a
  lookback plus a horizon, or a tail model) need; the error says how many rows are needed;
- forecasters take ``fit(y, y_val=None)``: scikit-learn's ``y`` (1-D class labels) arrives as
  the validation series and is refused for its column count;
- the Laplace estimators wrap a torch model given at construction.
"""

import warnings

import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from mola_ts.forecast import (
    ClassicalForecaster,
    DirectForecaster,
    DLinearForecaster,
    MoLAForecaster,
    SeasonalNaiveForecaster,
)
from mola_ts.monitor import (
    DPCAMonitor,
    LimitSupportWarning,
    MOLAMonitor,
    PCAMonitor,
    ResidualMonitor,
)
from mola_ts.uncertainty import FaultProbability, LaplaceMixture, LastLayerLaplace

torch.set_num_threads(1)
SMALL = {"d_model": 8, "d_ff": 8, "n_heads": 2, "n_layers": 1}

ESTIMATORS = [
    ResidualMonitor(),
    PCAMonitor(),
    DPCAMonitor(),
    MOLAMonitor(window=3, hidden_size=4, code_size=2, epochs=2, patience=1),
    MoLAForecaster(lookback=4, horizon=2, segment_length=1, backbone_params=SMALL, n_experts=2,
                   rank=2, epochs=1, foundation_epochs=1),
    DirectForecaster(4, 2, backbone_params=SMALL, epochs=1),
    DLinearForecaster(4, 2, epochs=1),
    SeasonalNaiveForecaster(2),
    ClassicalForecaster(2),
    FaultProbability(tail_fraction=0.5),
    LastLayerLaplace(),
    LaplaceMixture(),
]

ONE_D = "a 1-D input is one variable (time-series convention), not refused"
ORDER = "a sample's score depends on the samples before it (lags, windows, EWMA, CUSUM)"
DTYPE = "object and complex data are refused with a TypeError naming the dtype, never cast"
ROWS = "scikit-learn's check data (10-30 rows) are fewer than the cross-fit folds need"
PREDICT_1D = "a 1-D input is one variable; the error names the column-count mismatch"
ONE_FEATURE = "one variable leaves PCA no residual space (n_components < variables)"
FIT_Y = ("forecasters take fit(y, y_val): scikit-learn's 1-D y arrives as the validation series "
         "and is refused for its column count")
TAIL = "the tail model needs at least 10 values above its threshold; the check data have fewer"
TORCH = "wraps a torch model given at construction; the checks build it without one"

_TIME_SERIES = {"check_complex_data": DTYPE, "check_dtype_object": DTYPE,
                "check_fit2d_predict1d": PREDICT_1D,
                "check_methods_sample_order_invariance": ORDER,
                "check_methods_subset_invariance": ORDER}
_FORECASTER_FIT = ["check_dict_unchanged", "check_dont_overwrite_parameters",
                   "check_estimators_dtypes", "check_estimators_fit_returns_self",
                   "check_estimators_nan_inf", "check_estimators_overwrite_params",
                   "check_estimators_pickle", "check_f_contiguous_array_estimator",
                   "check_fit_check_is_fitted", "check_fit_idempotent",
                   "check_fit_score_takes_y", "check_methods_sample_order_invariance",
                   "check_methods_subset_invariance", "check_n_features_in",
                   "check_n_features_in_after_fitting", "check_pipeline_consistency",
                   "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
                   "check_fit2d_predict1d"]
_TORCH_ALL = ["check_dict_unchanged", "check_dont_overwrite_parameters",
              "check_estimator_sparse_array", "check_estimator_sparse_matrix",
              "check_estimator_sparse_tag", "check_estimators_dtypes",
              "check_estimators_empty_data_messages", "check_estimators_fit_returns_self",
              "check_estimators_nan_inf", "check_estimators_overwrite_params",
              "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit1d",
              "check_fit2d_1feature", "check_fit2d_1sample", "check_fit2d_predict1d",
              "check_fit_check_is_fitted", "check_fit_idempotent", "check_fit_score_takes_y",
              "check_methods_sample_order_invariance", "check_methods_subset_invariance",
              "check_n_features_in", "check_n_features_in_after_fitting",
              "check_pipeline_consistency", "check_positive_only_tag_during_fit",
              "check_readonly_memmap_input", "check_requires_y_none", "check_complex_data",
              "check_dtype_object"]

EXPECTED_FAILURES = {
    "ResidualMonitor": {**_TIME_SERIES, "check_fit1d": ONE_D,
                        "check_estimators_nan_inf": ROWS, "check_fit2d_1feature": ROWS,
                        "check_n_features_in_after_fitting": ROWS},
    "PCAMonitor": {"check_complex_data": DTYPE, "check_dtype_object": DTYPE,
                   "check_fit2d_predict1d": PREDICT_1D, "check_fit2d_1feature": ONE_FEATURE},
    "DPCAMonitor": {**_TIME_SERIES, "check_fit1d": ONE_D, "check_fit2d_1feature": ONE_FEATURE,
                    "check_estimators_dtypes": ROWS, "check_estimators_nan_inf": ROWS,
                    "check_n_features_in_after_fitting": ROWS},
    "MOLAMonitor": {**_TIME_SERIES, "check_fit2d_1feature": ROWS,
                    **{c: ROWS for c in (
                        "check_dict_unchanged", "check_dont_overwrite_parameters",
                        "check_estimators_dtypes", "check_estimators_fit_returns_self",
                        "check_estimators_nan_inf", "check_estimators_overwrite_params",
                        "check_estimators_pickle", "check_f_contiguous_array_estimator",
                        "check_fit_score_takes_y", "check_n_features_in_after_fitting",
                        "check_pipeline_consistency", "check_readonly_memmap_input",
                        "check_methods_sample_order_invariance",
                        "check_methods_subset_invariance")}},
    **{name: {"check_complex_data": DTYPE, "check_dtype_object": DTYPE, "check_fit1d": ONE_D,
              **{c: FIT_Y for c in _FORECASTER_FIT}}
       for name in ("MoLAForecaster", "DirectForecaster", "DLinearForecaster")},
    "SeasonalNaiveForecaster": {"check_complex_data": DTYPE, "check_dtype_object": DTYPE,
                                "check_fit1d": ONE_D,
                                **{c: FIT_Y for c in (
                                    "check_fit2d_predict1d", "check_fit_score_takes_y",
                                    "check_methods_sample_order_invariance",
                                    "check_methods_subset_invariance",
                                    "check_n_features_in_after_fitting",
                                    "check_pipeline_consistency")}},
    "ClassicalForecaster": {"check_complex_data": DTYPE, "check_dtype_object": DTYPE,
                            "check_fit2d_1feature": FIT_Y,
                            **{c: FIT_Y for c in _FORECASTER_FIT
                               if c not in ("check_fit_check_is_fitted", "check_n_features_in",
                                            "check_positive_only_tag_during_fit")}},
    "FaultProbability": {"check_complex_data": DTYPE, "check_dtype_object": DTYPE,
                         "check_fit1d": ONE_D, "check_fit2d_predict1d": PREDICT_1D,
                         "check_estimator_sparse_array": TAIL,
                         "check_estimator_sparse_matrix": TAIL,
                         "check_estimator_sparse_tag": TAIL,
                         **{c: TAIL for c in (
                             "check_n_features_in_after_fitting", "check_estimators_dtypes",
                             "check_estimators_nan_inf", "check_fit2d_1sample",
                             "check_fit2d_1feature", "check_n_features_in")}},
    "LastLayerLaplace": {c: TORCH for c in _TORCH_ALL},
    "LaplaceMixture": {c: TORCH for c in _TORCH_ALL},
}


def _expected(estimator) -> dict[str, str]:
    return EXPECTED_FAILURES[type(estimator).__name__]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected)
def test_scikit_learn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LimitSupportWarning)
        check(estimator)


def test_every_expected_failure_has_a_reason():
    names = {type(e).__name__ for e in ESTIMATORS}
    assert names == set(EXPECTED_FAILURES)
    for name, failures in EXPECTED_FAILURES.items():
        assert all(isinstance(r, str) and len(r) > 20 for r in failures.values()), name


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_monitors_and_forecasters_clone_with_their_parameters(estimator):
    from sklearn.base import clone

    assert clone(estimator).get_params() == estimator.get_params()
