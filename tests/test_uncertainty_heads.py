"""Per-member heads with their own Laplace posterior (uncertainty spec §2, §5)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mola_ts.uncertainty import LaplaceMixture
from mola_ts.uncertainty.heads import fit_head_posterior, laplace_state, restore_laplace


def _ar_features(n, seed, coef=(0.6, -0.3), sigma=0.5):
    """A linear-Gaussian AR(2) process: rows of (y[t-1], y[t-2]) -> y[t], known noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n + 200)
    for t in range(2, len(y)):
        y[t] = coef[0] * y[t - 1] + coef[1] * y[t - 2] + sigma * rng.normal()
    y = y[200:]
    x = np.stack([y[1:-1], y[:-2]], axis=1)
    return torch.tensor(x), torch.tensor(y[2:, None])


def _theta(head):
    return np.concatenate([head.weight.detach().double().numpy(),
                           head.bias.detach().double().numpy()[:, None]], axis=1)


def test_the_refitted_head_is_the_exact_blr_map_and_the_evidence_is_at_its_maximum():
    torch.manual_seed(0)
    x = torch.randn(3000, 5, dtype=torch.float64)
    y = x @ torch.randn(5, 3, dtype=torch.float64) + 0.3 * torch.randn(3000, 3, dtype=torch.float64)
    prior = nn.Linear(5, 3).double()
    before = _theta(prior)
    la = fit_head_posterior(x, y, prior)
    np.testing.assert_array_equal(_theta(prior), before)  # the given head is left alone
    assert la.model is not prior
    phi = np.concatenate([x.numpy(), np.ones((3000, 1))], axis=1)
    lam, sigma = la.prior_precision_, la.sigma_noise_
    for i in range(3):
        precision = phi.T @ phi / sigma[i] ** 2 + lam * np.eye(6)
        rhs = phi.T @ y[:, i].numpy() / sigma[i] ** 2 + lam * before[i]
        np.testing.assert_allclose(la.theta_[i], np.linalg.solve(precision, rhs), rtol=1e-5,
                                   atol=1e-8)
    # the evidence (at the MAP it describes) does not grow when lambda or sigma move
    best = la.log_marginal_likelihood()
    for factor in (0.8, 1.25):
        assert la.log_marginal_likelihood(prior_precision=lam * factor) <= best + 1e-6
        assert la.log_marginal_likelihood(sigma_noise=sigma * factor) <= best + 1e-6


def test_predictive_variance_is_the_closed_form_of_spec_section_2():
    x, y = _ar_features(2000, seed=1)
    la = fit_head_posterior(x, y, nn.Linear(2, 1).double())
    phi = np.concatenate([x.numpy(), np.ones((len(x), 1))], axis=1)
    s2 = float(la.sigma_noise_[0]) ** 2
    cov = np.linalg.inv(phi.T @ phi / s2 + la.prior_precision_ * np.eye(3))
    x_new, _ = _ar_features(50, seed=2)
    phi_new = np.concatenate([x_new.numpy(), np.ones((len(x_new), 1))], axis=1)
    mean, var = la.predict(x_new, return_var=True)
    np.testing.assert_allclose(var[:, 0], np.einsum("nd,de,ne->n", phi_new, cov, phi_new) + s2,
                               rtol=1e-8)
    np.testing.assert_allclose(mean[:, 0], phi_new @ la.theta_[0], rtol=1e-8, atol=1e-10)


def test_90_percent_interval_covers_90_percent_of_a_linear_gaussian_ar_process():
    x, y = _ar_features(3000, seed=3)
    la = fit_head_posterior(x, y, nn.Linear(2, 1).double())
    assert la.sigma_noise_[0] == pytest.approx(0.5, rel=0.05)
    x_test, y_test = _ar_features(25000, seed=4)
    lo, hi = la.predict_distribution(x_test).interval(0.9)
    covered = (y_test.numpy() >= lo) & (y_test.numpy() <= hi)
    assert covered.size >= 20000
    assert abs(covered.mean() - 0.9) <= 0.015


def test_members_differ_when_their_features_differ_and_collapse_when_equal():
    x, y = _ar_features(1500, seed=5)
    torch.manual_seed(0)
    heads = [nn.Linear(4, 1).double() for _ in range(3)]
    bodies = [torch.randn(2, 4, dtype=torch.float64) for _ in range(3)]
    feats = [torch.tanh(x @ b) for b in bodies]
    different = LaplaceMixture(heads).fit_members(feats, [y] * 3)
    dist = different.predict_members(feats)
    split = dist.variance_decomposition()
    assert (split["ensemble"] > 0).all() and (split["laplace"] > 0).all()
    assert len({float(np.atleast_1d(c.sigma_noise_)[0]) for c in different.components_}) == 3
    same = LaplaceMixture([heads[0]] * 3).fit_members([feats[0]] * 3, [y] * 3)
    dist = same.predict_members([feats[0]] * 3)
    np.testing.assert_allclose(dist.variance_decomposition()["ensemble"], 0, atol=1e-20)
    np.testing.assert_allclose(dist.variances[..., 0], dist.variances[..., 2])
    # the split adds up to the total variance
    total = sum(split.values())
    np.testing.assert_allclose(total, different.predict_members(feats).var, rtol=1e-12)
    with pytest.raises(ValueError, match="one entry per model"):
        LaplaceMixture(heads).fit_members(feats[:2], [y] * 2)


def test_the_state_rebuilds_the_own_head():
    x, y = _ar_features(500, seed=6)
    la = fit_head_posterior(x.float(), y.float(), nn.Linear(2, 1))
    back = restore_laplace(nn.Linear(2, 1), laplace_state(la))
    np.testing.assert_allclose(back.predict(x.float()), la.predict(x.float()), rtol=1e-6)
    np.testing.assert_allclose(_theta(back.model), la.theta_, rtol=1e-6)


def test_bad_input_is_rejected():
    x, y = _ar_features(100, seed=7)
    with pytest.raises(TypeError, match="nn.Linear"):
        fit_head_posterior(x, y, nn.Sequential(nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="do not fit a head"):
        fit_head_posterior(x, y, nn.Linear(3, 1).double())


def test_an_own_head_posterior_matches_laplace_torch_with_its_prior_mean():
    """Oracle: laplace-torch's last-layer Laplace (a test requirement) on a network ending with
    the refitted head, with the same prior precision, noise and prior mean (the old head)."""
    laplace = pytest.importorskip("laplace")
    torch.manual_seed(3)
    body = nn.Sequential(nn.Linear(3, 6), nn.Tanh())
    x, y = torch.randn(300, 3), torch.randn(300, 2)
    with torch.no_grad():
        feats = body(x)
    prior = nn.Linear(6, 2)
    la = fit_head_posterior(feats, y, prior, noise="shared")
    net = nn.Sequential(body, copy.deepcopy(la.model).requires_grad_(True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=50)
    theirs = laplace.Laplace(net, "regression", subset_of_weights="last_layer",
                             hessian_structure="full", sigma_noise=float(la.sigma_noise_),
                             prior_precision=float(la.prior_precision_),
                             prior_mean=torch.cat([prior.weight.detach().ravel(),
                                                   prior.bias.detach()]))
    theirs.fit(loader)
    x_new = torch.randn(8, 3)
    f_mu, f_var = theirs(x_new, pred_type="glm")
    with torch.no_grad():
        split = la.predict_distribution(body(x_new)).variance_decomposition()
    np.testing.assert_allclose(split["laplace"],
                               torch.diagonal(f_var, dim1=-2, dim2=-1).detach().numpy(),
                               rtol=1e-3)
    assert la.log_marginal_likelihood_ == pytest.approx(
        float(theirs.log_marginal_likelihood()), rel=1e-4)
