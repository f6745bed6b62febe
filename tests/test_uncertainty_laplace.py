import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from torch import nn

from mola_ts.uncertainty import LastLayerLaplace

LAMBDA, SIGMA = 2.0, 0.3


def _features(body: nn.Module, X: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        phi = body(X).numpy()
    return np.hstack([phi, np.ones((len(phi), 1))])


def _set_head(head: nn.Linear, stacked: np.ndarray) -> None:
    """Load ``[W^T; b]`` (features + 1 rows, one column per output) into the head."""
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(stacked[:-1].T))
        head.bias.copy_(torch.from_numpy(stacked[-1]))


def _exact_posterior(phi: np.ndarray, Y: np.ndarray, lam: float, sigma: float):
    """Bayesian linear regression, prior N(0, I / lam), noise sigma: covariance and mean."""
    cov = np.linalg.inv(phi.T @ phi / sigma**2 + lam * np.eye(phi.shape[1]))
    return cov, cov @ phi.T @ Y / sigma**2


@pytest.fixture
def blr():
    """A frozen random body, a 2-output head set to the exact BLR posterior mean (the MAP)."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(3, 5), nn.Tanh()).double()
    head = nn.Linear(5, 2).double()
    net = nn.Sequential(body, head)
    X = torch.randn(120, 3, dtype=torch.float64)
    phi = _features(body, X)
    rng = np.random.default_rng(0)
    Y = phi @ rng.normal(size=(6, 2)) + SIGMA * rng.standard_normal((120, 2))
    cov, mean = _exact_posterior(phi, Y, LAMBDA, SIGMA)
    _set_head(head, mean)
    return net, body, X, Y, cov, mean


@pytest.mark.parametrize("structure", ["full", "kron"])
def test_last_layer_laplace_is_the_exact_blr_posterior(blr, structure):
    net, body, X, Y, cov, mean = blr
    la = LastLayerLaplace(net, structure=structure, prior_precision=LAMBDA, sigma_noise=SIGMA,
                          tune=False).fit(X, torch.from_numpy(Y))
    np.testing.assert_allclose(la.theta_, mean.T, rtol=1e-12)
    dense = la.posterior_covariance()  # parameters ordered [W_0 b_0 | W_1 b_1]
    np.testing.assert_allclose(dense[:6, :6], cov, atol=1e-12)
    np.testing.assert_allclose(dense[6:, 6:], cov, atol=1e-12)
    np.testing.assert_allclose(dense[:6, 6:], 0.0, atol=1e-14)
    # GLM predictive = exact BLR predictive N(phi^T mu, phi^T Sigma phi + sigma^2)
    X_new = torch.randn(20, 3, dtype=torch.float64)
    phi = _features(body, X_new)
    m, v = la.predict(X_new, return_var=True)
    np.testing.assert_allclose(m, phi @ mean, atol=1e-12)
    functional = np.einsum("nd,de,ne->n", phi, cov, phi)
    np.testing.assert_allclose(v, (functional + SIGMA**2)[:, None].repeat(2, 1), rtol=1e-10)
    split = la.predict_distribution(X_new).variance_decomposition()
    np.testing.assert_allclose(split["laplace"], functional[:, None].repeat(2, 1), rtol=1e-10)
    np.testing.assert_allclose(split["noise"], SIGMA**2)
    # the Laplace evidence is the exact BLR evidence log N(y; 0, Phi Phi^T / lam + sigma^2 I)
    marginal_cov = _features(body, X) @ _features(body, X).T / LAMBDA + SIGMA**2 * np.eye(120)
    exact = -0.5 * (np.sum(Y * np.linalg.solve(marginal_cov, Y))
                    + 2 * np.linalg.slogdet(marginal_cov)[1] + 2 * 120 * np.log(2 * np.pi))
    assert la.log_marginal_likelihood_ == pytest.approx(exact, rel=1e-10)


def test_diag_is_exact_for_orthogonal_features_and_approximate_otherwise(blr):
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(np.column_stack([np.ones(200), rng.normal(size=(200, 3))]))
    X = basis[:, 1:] * np.array([3.0, 1.0, 0.5])  # orthogonal columns, orthogonal to the bias
    head = nn.Linear(3, 1).double()  # the explicit split: the head and its input features
    Y = X @ np.array([[1.0], [-2.0], [0.5]]) + 0.7 + SIGMA * rng.standard_normal((200, 1))
    phi = np.hstack([X, np.ones((200, 1))])
    cov, mean = _exact_posterior(phi, Y, LAMBDA, SIGMA)
    _set_head(head, mean)
    la = LastLayerLaplace(head, structure="diag", prior_precision=LAMBDA, sigma_noise=SIGMA,
                          tune=False).fit(X, Y)
    np.testing.assert_allclose(la.posterior_covariance(), cov, atol=1e-12)
    # with correlated features the diagonal approximation differs from the exact posterior
    net, _, X2, Y2, cov2, _ = blr
    diag = LastLayerLaplace(net, structure="diag", prior_precision=LAMBDA, sigma_noise=SIGMA,
                            tune=False).fit(X2, Y2)
    assert np.abs(diag.posterior_covariance()[:6, :6] - cov2).max() > 1e-3
    np.testing.assert_allclose(np.diag(diag.posterior_covariance())[:6],
                               1 / (np.diag(diag.gram_) / SIGMA**2 + LAMBDA))


def test_kron_and_full_agree_on_a_trained_mlp_with_per_output_noise():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3))
    X, y = torch.randn(150, 4), torch.randn(150, 3) * torch.tensor([0.1, 1.0, 3.0])
    kw = {"noise": "per_output", "prior_precision": 0.5}
    full = LastLayerLaplace(net, structure="full", **kw).fit(X, y)
    kron = LastLayerLaplace(net, structure="kron", **kw).fit(X, y)
    assert full.sigma_noise_.shape == (3,)
    np.testing.assert_allclose(full.sigma_noise_, kron.sigma_noise_, rtol=1e-6)
    np.testing.assert_allclose(full.posterior_covariance(), kron.posterior_covariance(),
                               atol=1e-9)
    X_new = torch.randn(9, 4) * 3
    np.testing.assert_allclose(full.predict(X_new, return_var=True)[1],
                               kron.predict(X_new, return_var=True)[1], rtol=1e-6)


def test_evidence_tuning_increases_the_evidence_and_finds_its_maximum():
    rng = np.random.default_rng(2)
    torch.manual_seed(2)
    body = nn.Sequential(nn.Linear(2, 6), nn.Tanh()).double()
    head = nn.Linear(6, 1).double()
    net = nn.Sequential(body, head)
    X = torch.randn(2000, 2, dtype=torch.float64)
    phi = _features(body, X)
    true_sigma = 0.2
    Y = phi @ rng.normal(size=(7, 1)) + true_sigma * rng.standard_normal((2000, 1))
    _, mean = _exact_posterior(phi, Y, 1.0, true_sigma)
    _set_head(head, mean)
    for structure in ("kron", "diag"):
        fixed = LastLayerLaplace(net, structure=structure, prior_precision=100.0,
                                 sigma_noise=1.0, tune=False).fit(X, Y)
        tuned = LastLayerLaplace(net, structure=structure, prior_precision=100.0,
                                 sigma_noise=1.0).fit(X, Y)
        assert tuned.log_marginal_likelihood_ > fixed.log_marginal_likelihood_ + 100
        assert tuned.sigma_noise_ == pytest.approx(true_sigma, rel=0.1)
        lam, sig = tuned.prior_precision_, tuned.sigma_noise_
        best = tuned.log_marginal_likelihood()
        for dl, ds in [(1.05, 1.0), (0.95, 1.0), (1.0, 1.01), (1.0, 0.99)]:
            assert tuned.log_marginal_likelihood(lam * dl, sig * ds) < best
        # a stationary point: central finite differences in log space vanish
        h = 1e-5
        grad_l = (tuned.log_marginal_likelihood(lam * np.exp(h), sig)
                  - tuned.log_marginal_likelihood(lam * np.exp(-h), sig)) / (2 * h)
        grad_s = (tuned.log_marginal_likelihood(lam, sig * np.exp(h))
                  - tuned.log_marginal_likelihood(lam, sig * np.exp(-h))) / (2 * h)
        assert abs(grad_l) < 1e-3 and abs(grad_s) < 1e-2


def test_per_output_noise_is_recovered():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3000, 4))
    noise = np.array([0.05, 0.5, 2.0])
    Y = X @ rng.normal(size=(4, 3)) + noise * rng.standard_normal((3000, 3))
    head = nn.Linear(4, 3).double()
    W, *_ = np.linalg.lstsq(np.hstack([X, np.ones((3000, 1))]), Y, rcond=None)
    _set_head(head, W)
    la = LastLayerLaplace(head, noise="per_output").fit(X, Y)
    np.testing.assert_allclose(la.sigma_noise_, noise, rtol=0.05)
    shared = LastLayerLaplace(head).fit(X, Y)
    assert isinstance(shared.sigma_noise_, float)
    assert la.log_marginal_likelihood_ > shared.log_marginal_likelihood_


def test_rows_of_a_channel_independent_head_and_batching():
    """A head applied to (batch, channels, d) features: every (sample, channel) is a row."""
    torch.manual_seed(4)
    body = nn.Linear(8, 6)
    net = nn.Sequential(body, nn.GELU(), nn.Linear(6, 4))  # (B, C, 8) -> (B, C, 4)
    X, y = torch.randn(50, 3, 8), torch.randn(50, 3, 4)
    la = LastLayerLaplace(net, batch_size=7).fit(X, y)
    assert la.n_rows_ == 150
    flat = LastLayerLaplace(net, batch_size=1000).fit(X.reshape(150, 8), y.reshape(150, 4))
    np.testing.assert_allclose(la.gram_, flat.gram_, rtol=1e-6)  # float32 model, other batches
    np.testing.assert_allclose(la.rss_, flat.rss_, rtol=1e-6)
    assert la.prior_precision_ == pytest.approx(flat.prior_precision_, rel=1e-6)
    dist = la.predict_distribution(X[:5])
    assert dist.batch_shape == (5, 3, 4)
    np.testing.assert_allclose(dist.var.reshape(15, 4),
                               flat.predict(X[:5].reshape(15, 8), return_var=True)[1], rtol=1e-6)


def test_datasets_multiple_inputs_and_numpy_give_the_same_fit():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 5)
            self.head = nn.Linear(5, 2)

        def forward(self, x, scale):
            return self.head(torch.tanh(self.body(x)) * scale)

    torch.manual_seed(5)
    model = TwoInputs()
    x, scale, y = torch.randn(60, 3), torch.rand(60, 1) + 0.5, torch.randn(60, 2)
    a = LastLayerLaplace(model).fit((x, scale), y)
    data = torch.utils.data.TensorDataset(x, scale, y)
    b = LastLayerLaplace(model, batch_size=16).fit(data)
    c = LastLayerLaplace(model).fit((x.numpy(), scale.numpy()), y.numpy())
    for other in (b, c):
        np.testing.assert_allclose(a.gram_, other.gram_, rtol=1e-5)
        # float32 forward passes in other batch sizes: equal up to float32 rounding
        np.testing.assert_allclose(a.predict(data), other.predict((x, scale)), rtol=1e-6,
                                   atol=1e-6)
    assert a.head_name_ == "head"


def test_the_model_is_left_as_it_was():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Linear(4, 1))
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    X, y = torch.randn(40, 2), torch.randn(40, 1)
    la = LastLayerLaplace(net).fit(X, y)
    la.predict(X)
    assert net.training
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key])
    assert not net[2]._forward_hooks
    # dropout was off during the passes: repeated predictions agree
    np.testing.assert_array_equal(la.predict(X), la.predict(X))


def test_sklearn_conventions():
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    la = LastLayerLaplace(net, structure="diag", prior_precision=3.0)
    assert la.get_params()["prior_precision"] == 3.0
    assert la.set_params(structure="full").structure == "full"
    copy = clone(la)
    assert copy.structure == "full" and copy.model is not net
    with pytest.raises(NotFittedError):
        la.predict(torch.randn(2, 2))
    with pytest.raises(NotFittedError):
        la.log_marginal_likelihood()
    assert not hasattr(la, "theta_")


def test_bad_input_is_rejected():
    torch.manual_seed(7)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2))
    X, y = torch.randn(10, 2), torch.randn(10, 2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        LastLayerLaplace("net").fit(X, y)
    with pytest.raises(ValueError, match="structure must be one of"):
        LastLayerLaplace(net, structure="kfac").fit(X, y)
    with pytest.raises(ValueError, match="noise must be 'shared' or 'per_output'"):
        LastLayerLaplace(net, noise="each").fit(X, y)
    with pytest.raises(ValueError, match="prior_precision must be a positive"):
        LastLayerLaplace(net, prior_precision=0.0).fit(X, y)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        LastLayerLaplace(net, batch_size=0).fit(X, y)
    with pytest.raises(ValueError, match="sigma_noise must be a positive float or 2"):
        LastLayerLaplace(net, noise="per_output", sigma_noise=[1.0, 2.0, 3.0]).fit(X, y)
    with pytest.raises(ValueError, match="no nn.Linear"):
        LastLayerLaplace(nn.Sequential(nn.Tanh())).fit(X, y)
    with pytest.raises(ValueError, match="not the output of its last nn.Linear"):
        LastLayerLaplace(nn.Sequential(net, nn.ReLU())).fit(X, y)
    with pytest.raises(TypeError, match="must be an nn.Linear"):
        LastLayerLaplace(net, last_layer="1").fit(X, y)
    with pytest.raises(ValueError, match="is not a submodule"):
        LastLayerLaplace(net, last_layer="head").fit(X, y)
    with pytest.raises(ValueError, match=r"y has per-batch shape \(10, 1\)"):
        LastLayerLaplace(net).fit(X, y[:, :1])
    with pytest.raises(ValueError, match="same first dimension"):
        LastLayerLaplace(net).fit(X, y[:5])
    with pytest.raises(ValueError, match="y holds 1 NaN"):
        bad = y.clone()
        bad[3, 1] = float("nan")
        LastLayerLaplace(net).fit(X, bad)
    with pytest.raises(ValueError, match="y is required"):
        LastLayerLaplace(net).fit(X)
    with pytest.raises(ValueError, match="y must be None when X is a torch Dataset"):
        LastLayerLaplace(net).fit(torch.utils.data.TensorDataset(X, y), y)
    with pytest.raises(TypeError, match="X must be a torch Tensor or a numpy array"):
        LastLayerLaplace(net).fit([[0.0, 1.0]] * 10, y)
    with pytest.raises(TypeError, match=r"X\[1\] must be a torch Tensor"):
        LastLayerLaplace(net).fit((X, "scale"), y)
    with pytest.raises(ValueError, match="the head has 6002 parameters"):
        LastLayerLaplace(nn.Linear(3000, 2), structure="full").fit(torch.randn(5, 3000),
                                                                  torch.randn(5, 2))
    twice = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="ran 2 times"):
        LastLayerLaplace(nn.Sequential(twice, twice)).fit(X, y)
    fitted = LastLayerLaplace(net).fit(X, y)
    with pytest.raises(ValueError, match="sigma_noise must be positive"):
        fitted.log_marginal_likelihood(sigma_noise=-1.0)


def test_predictive_variance_matches_laplace_torch():
    """Oracle: laplace-torch (a test requirement, not a dependency) on the same network."""
    import laplace  # a test oracle: tests/oracle-requirements.txt (README's test command)
    torch.manual_seed(8)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    X, y, X_new = torch.randn(120, 3), torch.randn(120, 2), torch.randn(10, 3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=32)
    # laplace-torch's "kron" drops the weight-bias cross terms, so ours ("kron" = exact = "full")
    # is compared with its "full"
    for ours_structure, theirs_structure in [("full", "full"), ("kron", "full"),
                                             ("diag", "diag")]:
        ours = LastLayerLaplace(net, structure=ours_structure, prior_precision=0.7,
                                sigma_noise=0.4, tune=False).fit(X, y)
        theirs = laplace.Laplace(net, "regression", subset_of_weights="last_layer",
                                 hessian_structure=theirs_structure, sigma_noise=0.4,
                                 prior_precision=0.7)
        theirs.fit(loader)
        f_mu, f_var = theirs(X_new, pred_type="glm")
        split = ours.predict_distribution(X_new).variance_decomposition()
        np.testing.assert_allclose(ours.predict(X_new), f_mu.detach().numpy(), atol=1e-6)
        np.testing.assert_allclose(split["laplace"],
                                   torch.diagonal(f_var, dim1=-2, dim2=-1).detach().numpy(),
                                   rtol=1e-4)
        assert ours.log_marginal_likelihood_ == pytest.approx(
            float(theirs.log_marginal_likelihood()), rel=1e-5)
