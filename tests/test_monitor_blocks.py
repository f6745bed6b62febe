import numpy as np
import pytest

from mola_ts.data import TEP_COLUMNS
from mola_ts.monitor.blocks import (
    TEP_BLOCKS,
    TEP_LOOP_BLOCKS,
    correlation_blocks,
    resolve_blocks,
)


def test_tep_partition_covers_every_variable_once():
    listed = [v for variables in TEP_BLOCKS.values() for v in variables]
    assert sorted(listed) == sorted(TEP_COLUMNS) and len(listed) == 52
    assert set(TEP_BLOCKS) == {"feeds_reactor", "separator", "stripper", "compressor_purge",
                               "analysers", "manipulated"}
    assert TEP_BLOCKS["analysers"] == [f"XMEAS({i})" for i in range(23, 42)]
    assert TEP_BLOCKS["manipulated"] == [f"XMV({i})" for i in range(1, 12)]


def test_tep_loop_partition_pairs_each_valve_with_its_measurement():
    listed = [v for variables in TEP_LOOP_BLOCKS.values() for v in variables]
    assert sorted(listed) == sorted(TEP_COLUMNS) and len(listed) == 52
    block_of = {v: name for name, variables in TEP_LOOP_BLOCKS.items() for v in variables}
    for xmv, xmeas in ((3, 1), (5, 20), (6, 10), (7, 12), (8, 15), (9, 19), (10, 9), (11, 17)):
        assert block_of[f"XMV({xmv})"] == block_of[f"XMEAS({xmeas})"]
    positions, kind = resolve_blocks("tep_loops", TEP_COLUMNS)
    assert kind == "tep_loops" and list(positions) == list(TEP_LOOP_BLOCKS)
    assert resolve_blocks("auto", TEP_COLUMNS)[1] == "tep"  # the spec's default stays


def test_auto_picks_the_tep_partition_only_for_the_tep_variables():
    positions, kind = resolve_blocks("auto", TEP_COLUMNS[::-1])
    assert kind == "tep"
    assert [TEP_COLUMNS[::-1][j] for j in positions["stripper"]] == TEP_BLOCKS["stripper"]
    rng = np.random.default_rng(0)
    _, kind = resolve_blocks("auto", ["a", "b", "c"], X=rng.normal(size=(50, 3)), n_blocks=2)
    assert kind == "correlation"


def test_correlation_clustering_recovers_correlated_groups():
    rng = np.random.default_rng(1)
    f1, f2 = rng.normal(size=(2, 400))
    X = np.column_stack([f1, f2, -f1, f2, f1, rng.normal(size=400) * 0.1 + f2])
    X = X + 0.2 * rng.normal(size=X.shape)
    blocks = correlation_blocks(X, list("abcdef"), n_blocks=2)
    assert sorted(map(sorted, blocks.values())) == [["a", "c", "e"], ["b", "d", "f"]]
    assert correlation_blocks(X, list("abcdef"), 1) == {"block0": list("abcdef")}


def test_single_block_and_explicit_partitions():
    positions, kind = resolve_blocks("single", ["x", "y"])
    assert kind == "single" and positions == {"all": [0, 1]}
    positions, kind = resolve_blocks({"p": ["y"], "q": ["x"]}, ["x", "y"])
    assert kind == "custom" and positions == {"p": [1], "q": [0]}
    positions, _ = resolve_blocks([["x"], ["y"]], ["x", "y"])
    assert positions == {"block0": [0], "block1": [1]}


def test_partition_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown variables \['XMEAS\(99\)'\]"):
        resolve_blocks({"a": ["XMEAS(1)", "XMEAS(99)"]}, ["XMEAS(1)"])
    with pytest.raises(ValueError, match="unknown variables"):
        resolve_blocks("tep", [f"x{i}" for i in range(52)])  # a numpy array has no TEP names
    with pytest.raises(ValueError, match="belong to no block"):
        resolve_blocks({"a": ["x"]}, ["x", "y"])
    with pytest.raises(ValueError, match="in both block"):
        resolve_blocks({"a": ["x", "y"], "b": ["y"]}, ["x", "y"])
    with pytest.raises(ValueError, match="empty"):
        resolve_blocks({"a": [], "b": ["x"]}, ["x"])
    with pytest.raises(ValueError, match="one of"):
        resolve_blocks("units", ["x"])
    with pytest.raises(TypeError, match="must list variable names"):
        resolve_blocks({"a": "x"}, ["x"])
