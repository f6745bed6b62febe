import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from torch import nn

from mola_ts.training import TrainConfig, train
from mola_ts.uncertainty import LaplaceMixture, LastLayerLaplace


@pytest.fixture(scope="module")
def ensemble():
    """K = 3 small networks trained with different seeds on y = sin(3x) + noise, x in [-1, 1]."""
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(200, 1, generator=gen) * 2 - 1
    y = torch.sin(3 * X) + 0.1 * torch.randn(200, 1, generator=gen)
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        train(net, (X, y), lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(),
              TrainConfig(epochs=40, batch_size=50, lr=1e-2, random_state=seed))
        models.append(net)
    return models, X, y


def test_components_are_the_single_laplace_fits(ensemble):
    models, X, y = ensemble
    mix = LaplaceMixture(models).fit(X, y)
    assert mix.n_components_ == 3
    X_new = torch.linspace(-3, 3, 25)[:, None]
    single = [LastLayerLaplace(m).fit(X, y) for m in models]
    for component, alone in zip(mix.components_, single, strict=True):
        assert component.prior_precision_ == pytest.approx(alone.prior_precision_)
        assert component.sigma_noise_ == pytest.approx(alone.sigma_noise_)
    np.testing.assert_allclose(mix.log_marginal_likelihood(),
                               [s.log_marginal_likelihood_ for s in single])
    dist = mix.predict_distribution(X_new)
    assert dist.batch_shape == (25, 1) and dist.n_components == 3
    means = np.stack([s.predict(X_new) for s in single], axis=-1)
    variances = np.stack([s.predict(X_new, return_var=True)[1] for s in single], axis=-1)
    np.testing.assert_allclose(dist.means, means)
    np.testing.assert_allclose(dist.weights, 1 / 3)
    np.testing.assert_allclose(mix.predict(X_new), means.mean(axis=-1))
    # total variance = mean within + spread of the means; the split names the parts
    split = dist.variance_decomposition()
    noise = np.mean([s.sigma_noise_**2 for s in single])
    np.testing.assert_allclose(split["noise"], noise)
    np.testing.assert_allclose(split["ensemble"], means.var(axis=-1), rtol=1e-10)
    np.testing.assert_allclose(split["laplace"], variances.mean(axis=-1) - noise, rtol=1e-10)
    np.testing.assert_allclose(mix.predict(X_new, return_var=True)[1],
                               variances.mean(axis=-1) + means.var(axis=-1), rtol=1e-10)


def test_uncertainty_grows_away_from_the_data_and_intervals_nest(ensemble):
    models, X, y = ensemble
    dist = LaplaceMixture(models).fit(X, y).predict_distribution(torch.tensor([[0.0], [4.0]]))
    split = dist.variance_decomposition()
    assert split["laplace"][1, 0] > 10 * split["laplace"][0, 0]
    assert split["ensemble"][1, 0] > 10 * split["ensemble"][0, 0]
    lo80, hi80 = dist.interval(0.8)
    lo90, hi90 = dist.interval(0.9)
    assert (lo90 < lo80).all() and (hi80 < hi90).all()


def test_one_model_is_a_single_laplace(ensemble):
    models, X, y = ensemble
    mix = LaplaceMixture(models[:1], structure="full").fit(X, y)
    alone = LastLayerLaplace(models[0], structure="full").fit(X, y)
    np.testing.assert_allclose(mix.predict(X[:10], return_var=True)[1],
                               alone.predict(X[:10], return_var=True)[1])


def test_sklearn_conventions_and_bad_input(ensemble):
    models, X, y = ensemble
    mix = LaplaceMixture(models, structure="diag")
    assert clone(mix).get_params()["structure"] == "diag"
    with pytest.raises(NotFittedError):
        mix.predict(X)
    with pytest.raises(TypeError, match="models must be a list or tuple"):
        LaplaceMixture(models[0]).fit(X, y)
    with pytest.raises(ValueError, match="models is empty"):
        LaplaceMixture([]).fit(X, y)
    with pytest.raises(TypeError, match=r"models\[1\] must be a torch.nn.Module"):
        LaplaceMixture([models[0], "net"]).fit(X, y)
    with pytest.raises(ValueError, match="structure must be one of"):
        LaplaceMixture(models, structure="block").fit(X, y)
    other = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="y has per-batch shape"):
        LaplaceMixture([models[0], other]).fit(X, y)
    assert np.isfinite(LaplaceMixture(models, tune=False).fit(X, y).predict(X)).all()
