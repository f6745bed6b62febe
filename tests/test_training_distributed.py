"""Scale-out training: ``train`` under ``torchrun --nproc-per-node 2`` (CPU, gloo).

One torchrun launch (module fixture) runs every scenario of ``tests/distributed_worker.py`` in
the same two processes, which also exercises several ``train`` calls per process; the tests
compare what each rank recorded with each other and with a single-process run of the same
global batch.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock

from mola_ts.training import (
    TrainConfig,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
    train,
)
from mola_ts.training.distributed import Replicas

WORKER = Path(__file__).with_name("distributed_worker.py")
SCENARIOS = ("exact", "method", "shuffled", "stopping", "nonfinite", "mola", "monitor")
_spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def run_torchrun(out: Path, scenarios, nproc: int = 2, timeout: float = 240.0) -> str | None:
    """Launch the worker with torchrun; None on success, else the end of its log.

    The whole process tree is killed if it overruns (a hang must fail, not linger).
    """
    # --standalone: a local rendezvous on a free port chosen by the launcher itself
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), str(WORKER), str(out), *scenarios]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOLA_TS_NO_PROGRESS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        return f"torchrun did not finish in {timeout} s:\n{log[-4000:]}"
    return None if proc.returncode == 0 else f"torchrun failed:\n{log[-6000:]}"


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """``ranks(name)`` -> (rank 0's record, rank 1's record) of one scenario.

    One launch per test session: under pytest-xdist the workers share the base temporary
    folder's parent, and a file lock lets the first one launch while the others wait.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out = root / "torchrun_training"
    with FileLock(str(out) + ".lock"):
        if not (out / "outcome.txt").exists():
            out.mkdir(exist_ok=True)
            failure = run_torchrun(out, SCENARIOS)
            (out / "outcome.txt").write_text(failure or "ok")
    outcome = (out / "outcome.txt").read_text()
    if outcome != "ok":
        pytest.fail(outcome)

    def load(name):
        return tuple(torch.load(out / f"{name}_rank{r}.pt", weights_only=False) for r in (0, 1))

    load.out = out
    return load


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def single_process(build):
    model, data, loss_fn, config, val_data = build()
    return model, train(model, data, loss_fn, config, val_data=val_data)


@pytest.mark.parametrize("scenario, build", [("exact", worker.build_exact),
                                             ("method", worker.build_method)])
def test_torchrun_equals_single_process_with_the_same_global_batch(ranks, scenario, build):
    r0, r1 = ranks(scenario)
    assert_same_state(r0["state"], r1["state"])
    assert r0["history"] == r1["history"]
    # each rank trained on its own half: rows 0, 2, 4... and 1, 3, 5..., in batches of 16 / 2
    x, _ = worker.regression_data(64, 0)
    assert [len(b) for b in r0["seen"]] == [8] * 16
    torch.testing.assert_close(torch.cat(r0["seen"][:4]), x[0::2, 0], rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(r1["seen"][:4]), x[1::2, 0], rtol=0, atol=0)
    # unshuffled, global batch k is rows [16k, 16k + 16) in both runs: same gradients, same
    # weights up to float summation order (also for the loss that bypasses DDP's forward)
    model, result = single_process(build)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-5, atol=1e-6)
    for ddp, ref in zip(r0["history"], result.history, strict=True):
        assert ddp["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
        assert ddp["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
    # the frozen base never moved, the never-used parameter got no update on either side
    torch.testing.assert_close(r0["state"]["never_used"], torch.zeros(3), rtol=0, atol=0)
    assert not torch.equal(r0["state"]["a.weight"], build()[0].a.weight.detach())


def test_torchrun_shuffled_validation_loss_is_close_to_single_process(ranks):
    r0, r1 = ranks("shuffled")
    assert_same_state(r0["state"], r1["state"])
    assert r0["history"] == r1["history"]
    n_items = len(worker.window_data(400, 0))
    epochs = len(r0["history"])
    for epoch in range(epochs):  # 13 per-rank batches of 16 windows per epoch
        mine = torch.cat(r0["fetched"][13 * epoch : 13 * (epoch + 1)])
        theirs = torch.cat(r1["fetched"][13 * epoch : 13 * (epoch + 1)])
        assert len(mine) == len(theirs) == n_items // 2
        assert sorted(torch.cat([mine, theirs]).tolist()) == list(range(n_items))
    assert len(r0["fetched"]) == 13 * epochs
    first, second = torch.cat(r0["fetched"][:13]), torch.cat(r0["fetched"][13:26])
    assert not torch.equal(first, second)  # set_epoch reshuffled
    _, result = single_process(worker.build_shuffled)
    final, reference = r0["history"][-1]["val_loss"], result.history[-1]["val_loss"]
    assert final < r0["history"][0]["val_loss"] / 10
    assert final == pytest.approx(reference, rel=0.1)


def test_torchrun_early_stopping_restores_the_same_best_weights_and_only_rank0_saves(ranks):
    r0, r1 = ranks("stopping")
    assert r0["stopped_early"] and r1["stopped_early"]
    assert r0["best_epoch"] == r1["best_epoch"]
    assert len(r0["history"]) == r0["best_epoch"] + 2  # patience 2
    assert r0["history"] == r1["history"]
    # restored best weights and BatchNorm statistics: identical on both ranks
    assert_same_state(r0["state"], r1["state"])
    assert (ranks.out / "stopping_ckpt_rank0.pt").is_file()
    assert not (ranks.out / "stopping_ckpt_rank1.pt").exists()
    checkpoint = torch.load(ranks.out / "stopping_ckpt_rank0.pt", weights_only=True)
    assert_same_state(checkpoint, r0["state"])  # plain module keys, no "module." prefix
    assert r0["seen_main"] == [True] * len(r0["history"])
    assert r1["seen_main"] == [False] * len(r1["history"])
    # a second train call in the same processes (new process group) stays in step too
    assert_same_state(r0["second_state"], r1["second_state"])
    assert r0["second_history"] == r1["second_history"]
    # and afterwards a backward pass is local again (no DDP hook left on the parameters)
    assert not torch.equal(r0["local_grad"], r1["local_grad"])


def test_torchrun_nonfinite_loss_on_one_rank_stops_every_rank(ranks):
    r0, r1 = ranks("nonfinite")
    assert r0["error"] is not None and "epoch 1, batch 1" in r0["error"]
    assert r0["error"] == r1["error"]
    assert not torch.equal(r0["local_grad"], r1["local_grad"])
    assert_same_state(r0["state"], r1["state"])


@pytest.mark.parametrize("router", ["segment", "ldmole"])
def test_torchrun_mola_forecaster_is_identical_on_every_rank_and_saved_once(ranks, router):
    from mola_ts.forecast import MoLAForecaster

    r0, r1 = ranks("mola")
    r0, r1 = r0[router], r1[router]
    assert_same_state(r0["foundation"], r1["foundation"])
    assert_same_state(r0["state"], r1["state"])
    np.testing.assert_array_equal(r0["prediction"], r1["prediction"])
    assert r0["history"] == r1["history"]
    assert r0["foundation_history"] == r1["foundation_history"]
    np.testing.assert_array_equal(r0["stop_epochs"], r1["stop_epochs"])
    if router == "segment":
        assert r0["stop_epochs"][0] > 0  # segment 0 stopped and froze, in step on both ranks
    assert (ranks.out / f"mola_{router}_rank0.pt").is_file()
    assert not (ranks.out / f"mola_{router}_rank1.pt").exists()
    loaded = MoLAForecaster.load(ranks.out / f"mola_{router}_rank0.pt")
    np.testing.assert_array_equal(loaded.predict().to_numpy(), r0["prediction"])
    # same global batch in one process: the same validation loss up to the shuffling
    single = worker.build_mola(router).fit(worker.forecast_frame())
    assert r0["foundation_history"][-1]["val_loss"] == pytest.approx(
        single.foundation_.history_[-1]["val_loss"], rel=0.15)
    assert r0["history"][-1]["val_loss"] == pytest.approx(single.history_[-1]["val_loss"],
                                                         rel=0.15)


def test_torchrun_mola_monitor_is_identical_on_every_rank_and_saved_once(ranks):
    from mola_ts.monitor import MOLAMonitor

    r0, r1 = ranks("monitor")
    assert r0["history"] == r1["history"]
    assert r0["threshold"] == r1["threshold"]
    np.testing.assert_array_equal(r0["scores"], r1["scores"])
    assert (ranks.out / "monitor_model_rank0.pt").is_file()
    assert not (ranks.out / "monitor_model_rank1.pt").exists()
    loaded = MOLAMonitor.load(ranks.out / "monitor_model_rank0.pt")
    np.testing.assert_array_equal(loaded.score_samples(worker.process_frame(80, 1)), r0["scores"])
    single = worker.build_monitor().fit(worker.process_frame(300, 0))
    for block, epochs in single.training_history_.items():
        assert r0["history"][block][-1]["val_loss"] == pytest.approx(epochs[-1]["val_loss"],
                                                                     rel=0.15)


def test_torchrun_rank_helpers(ranks):
    r0, r1 = ranks("exact")
    assert (r0["rank"], r0["world_size"], r0["main"], r0["distributed"]) == (0, 2, True, True)
    assert (r1["rank"], r1["world_size"], r1["main"], r1["distributed"]) == (1, 2, False, True)


def test_rank_helpers_read_the_launch_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert (get_rank(), get_world_size(), is_distributed(), is_main_process()) == (
        0, 1, False, True)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert (get_rank(), get_world_size(), is_distributed(), is_main_process()) == (
        1, 2, True, False)


def test_launch_errors_name_what_is_missing(monkeypatch):
    x, y = worker.regression_data(16, 0)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="not launched by torchrun"):
        train(torch.nn.Linear(4, 1), (x, y), worker.mse_forward, TrainConfig(distributed=True))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")  # a world of one without a rendezvous: one process
    train(torch.nn.Linear(4, 1), (x, y), worker.mse_forward, TrainConfig(epochs=1))
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT is not"):
        train(torch.nn.Linear(4, 1), (x, y), worker.mse_forward)


def test_distributed_false_trains_this_process_alone_under_a_launch(monkeypatch):
    x, y = worker.regression_data(32, 0)
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 1)
    expected = train(reference, (x, y), worker.mse_forward, TrainConfig(epochs=2)).history
    # a launch whose peers do not exist: any attempt to connect would fail or hang
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1"),
                        ("MASTER_PORT", "9")):
        monkeypatch.setenv(name, value)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    result = train(model, (x, y), worker.mse_forward,
                   TrainConfig(epochs=2, distributed=False))
    assert result.history == expected
    assert torch.equal(model.weight, reference.weight)
    assert not torch.distributed.is_initialized()


def test_global_batch_is_split_over_the_ranks_rounding_up():
    replicas = object.__new__(Replicas)
    replicas.rank, replicas.world_size = 0, 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert replicas.local_batch_size(32) == 8
    with pytest.warns(UserWarning, match="global batch of 12"):
        assert replicas.local_batch_size(10) == 3
