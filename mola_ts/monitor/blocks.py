"""Variable partitions (blocks) for multi-block monitoring.

Three kinds (monitoring spec §1):

- the Tennessee Eastman unit partition :data:`TEP_BLOCKS` (process knowledge; ours, see below)
  and its control-loop variant :data:`TEP_LOOP_BLOCKS`;
- a data-driven partition, :func:`correlation_blocks`: average-linkage hierarchical clustering
  of the variables with distance ``1 - |correlation|``, cut into ``n_blocks`` clusters;
- the trivial one-block partition.

:func:`resolve_blocks` turns any of them (or an explicit mapping ``{block name: [variables]}``)
into column positions, checking that every variable belongs to exactly one block and that every
name is a known column.

TEP unit partition (Downs & Vogel variable numbering; every one of the 52 variables once):

========================  ================================================================
block                     variables
========================  ================================================================
``feeds_reactor``         XMEAS 1-4 (A, D, E, A+C feeds), 6 (reactor feed rate), 7 (reactor
                          pressure), 8 (reactor level), 9 (reactor temperature), 21 (reactor
                          cooling water outlet temperature)
``separator``             XMEAS 11 (temperature), 12 (level), 13 (pressure), 14 (underflow),
                          22 (condenser cooling water outlet temperature)
``stripper``              XMEAS 15 (level), 16 (pressure), 17 (underflow), 18 (temperature),
                          19 (steam flow)
``compressor_purge``      XMEAS 5 (recycle flow), 10 (purge rate), 20 (compressor work)
``analysers``             XMEAS 23-41 (reactor feed, purge gas and product compositions; the
                          slow, sampled analyser measurements)
``manipulated``           XMV 1-11 (the manipulated variables: feed, valve and cooling flows)
========================  ================================================================

TEP control-loop partition (``blocks="tep_loops"``): the same units, but every manipulated
variable sits in the block of the measurement its controller moves it with, so that a block
holds both ends of its control loops. A fault that a controller compensates (the measurement
back at its set point, the valve shifted for good, as in faults 4 and 5) then breaks a relation
inside one block, which the block's autoencoder sees, instead of leaving a lone shifted valve in
a block of valves. The pairing is read from the normal run d00 (the XMEAS each XMV correlates
with most): XMV 3 ~ XMEAS 1 (|r| = 1.00), XMV 4 ~ XMEAS 4 (0.27), XMV 5 ~ XMEAS 20 (0.86),
XMV 6 ~ XMEAS 10 (0.94), XMV 7 ~ XMEAS 12 (1.00), XMV 8 ~ XMEAS 15 (1.00), XMV 9 ~ XMEAS 19
(0.98), XMV 10 ~ XMEAS 9 (0.64) and XMV 11 ~ XMEAS 17 (1.00: in these data the condenser
cooling water flow moves one for one with the stripper underflow); XMV 1 and 2 (D and E feed
flows, no strong partner) join the feeds.

========================  ================================================================
block                     variables
========================  ================================================================
``feeds``                 XMEAS 1-4, XMV 1-4
``reactor``               XMEAS 6-9, 21, XMV 10
``separator``             XMEAS 11-14, 22, XMV 7
``stripper``              XMEAS 15-19, XMV 8, 9, 11
``compressor_purge``      XMEAS 5, 10, 20, XMV 5, 6
``analysers``             XMEAS 23-41
========================  ================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TEP_BLOCKS", "TEP_LOOP_BLOCKS", "correlation_blocks", "resolve_blocks",
           "BLOCK_KINDS"]


def _xmeas(*numbers: int) -> list[str]:
    return [f"XMEAS({i})" for i in numbers]


TEP_BLOCKS: dict[str, list[str]] = {
    "feeds_reactor": _xmeas(1, 2, 3, 4, 6, 7, 8, 9, 21),
    "separator": _xmeas(11, 12, 13, 14, 22),
    "stripper": _xmeas(15, 16, 17, 18, 19),
    "compressor_purge": _xmeas(5, 10, 20),
    "analysers": _xmeas(*range(23, 42)),
    "manipulated": [f"XMV({i})" for i in range(1, 12)],
}

def _xmv(*numbers: int) -> list[str]:
    return [f"XMV({i})" for i in numbers]


TEP_LOOP_BLOCKS: dict[str, list[str]] = {
    "feeds": _xmeas(1, 2, 3, 4) + _xmv(1, 2, 3, 4),
    "reactor": _xmeas(6, 7, 8, 9, 21) + _xmv(10),
    "separator": _xmeas(11, 12, 13, 14, 22) + _xmv(7),
    "stripper": _xmeas(15, 16, 17, 18, 19) + _xmv(8, 9, 11),
    "compressor_purge": _xmeas(5, 10, 20) + _xmv(5, 6),
    "analysers": _xmeas(*range(23, 42)),
}

BLOCK_KINDS = ("auto", "tep", "tep_loops", "correlation", "single")


def correlation_blocks(X: np.ndarray, columns: Sequence[str], n_blocks: int
                       ) -> dict[str, list[str]]:
    """Partition the columns by hierarchical clustering of their absolute correlations.

    Average linkage on the distance ``1 - |corr|``, cut into at most ``n_blocks`` clusters.
    Blocks are named ``block0, block1, ...`` in the order of their first variable.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    X = np.asarray(X, dtype=np.float64)
    n_vars = X.shape[1]
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    if n_blocks == 1 or n_vars == 1:
        return {"block0": list(columns)}
    corr = np.corrcoef(X, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)  # only constant columns give NaN; they are rejected later
    dist = 1.0 - np.abs(corr)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2.0, 0.0, None)
    tree = linkage(squareform(dist, checks=False), method="average")
    labels = fcluster(tree, t=min(n_blocks, n_vars), criterion="maxclust")
    blocks: dict[str, list[str]] = {}
    order: list[int] = []
    for label in labels:
        if label not in order:
            order.append(label)
    for i, label in enumerate(order):
        blocks[f"block{i}"] = [c for c, lab in zip(columns, labels, strict=True) if lab == label]
    return blocks


def _check_partition(partition: Mapping[str, Sequence[str]], columns: Sequence[str]
                     ) -> dict[str, list[int]]:
    if not partition:
        raise ValueError("blocks is an empty partition; give at least one block")
    position = {c: i for i, c in enumerate(columns)}
    seen: dict[str, str] = {}
    out: dict[str, list[int]] = {}
    unknown: list[str] = []
    for name, variables in partition.items():
        if isinstance(variables, str) or not isinstance(variables, Sequence):
            raise TypeError(
                f"block {name!r} must list variable names, got {type(variables).__name__}"
            )
        if len(variables) == 0:
            raise ValueError(f"block {name!r} is empty")
        for v in variables:
            v = str(v)
            if v not in position:
                unknown.append(v)
            elif v in seen:
                raise ValueError(f"variable {v!r} is in both block {seen[v]!r} and {name!r}")
            else:
                seen[v] = str(name)
        out[str(name)] = [position[str(v)] for v in variables if str(v) in position]
    if unknown:
        raise ValueError(
            f"blocks names unknown variables {unknown[:8]} (X has the columns "
            f"{list(columns)[:8]}{' ...' if len(columns) > 8 else ''}); "
            "pass a DataFrame whose columns carry these names"
        )
    missing = [c for c in columns if c not in seen]
    if missing:
        raise ValueError(
            f"the variables {missing[:8]} belong to no block; every column of X must be in "
            "exactly one block (drop the column from X or add it to a block)"
        )
    return out


def resolve_blocks(blocks, columns: Sequence[str], X: np.ndarray | None = None,
                   n_blocks: int = 4) -> tuple[dict[str, list[int]], str]:
    """Column positions of each block, and the kind of partition that was used.

    Parameters
    ----------
    blocks : {"auto", "tep", "tep_loops", "correlation", "single"} or mapping
        ``"auto"``: the TEP unit partition when ``columns`` are exactly the 52 TEP variables,
        else ``"correlation"``. ``"tep"`` and ``"tep_loops"`` require every TEP variable name.
        A mapping gives ``{block name: [variable names]}``.
    columns : sequence of str
        The column names of the data.
    X : ndarray, optional
        The (standardised) data, needed by ``"correlation"``.
    n_blocks : int
        Number of clusters of ``"correlation"``.
    """
    columns = [str(c) for c in columns]
    if isinstance(blocks, str):
        if blocks not in BLOCK_KINDS:
            raise ValueError(f"blocks must be one of {BLOCK_KINDS} or a mapping, got {blocks!r}")
        kind = blocks
        if kind == "auto":
            tep = {v for vs in TEP_BLOCKS.values() for v in vs}
            kind = "tep" if set(columns) == tep and len(columns) == len(tep) else "correlation"
        if kind == "tep":
            partition = TEP_BLOCKS
        elif kind == "tep_loops":
            partition = TEP_LOOP_BLOCKS
        elif kind == "single":
            partition = {"all": columns}
        else:
            if X is None:
                raise ValueError("the correlation partition needs the data X")
            partition = correlation_blocks(X, columns, n_blocks)
        return _check_partition(partition, columns), kind
    if isinstance(blocks, Mapping):
        return _check_partition(blocks, columns), "custom"
    if isinstance(blocks, Sequence):
        return _check_partition({f"block{i}": list(b) for i, b in enumerate(blocks)},
                                columns), "custom"
    raise TypeError(
        f"blocks must be a string, a mapping of block name -> variable names or a list of "
        f"variable lists, got {type(blocks).__name__}"
    )
