"""MoLA on the long-term forecasting benchmark, step by step, then the full benchmark.

Run from the repository root (set ``MOLA_TS_DATA`` to a folder holding ETTh1, or let the loader
download it)::

    python examples/forecast_benchmark.py --quick     # a smoke run: tiny models, a minute or two
    python examples/forecast_benchmark.py             # ETTh1, the four horizons, all models

The first part uses the estimators directly: it trains one MoLA foundation on ETTh1 (96 steps
of history, 48 ahead), adapts it to a 96-step horizon with shared LoRA experts, compares it
with the direct iTransformer of the same size and prints a forecast with its timestamps. The
second part calls the benchmark runner behind ``mola-ts bench forecast``, which writes
``results.csv`` and ``results.md`` (our numbers beside the published ones) under ``--out``.
"""

from __future__ import annotations

import argparse

from mola_ts.bench.forecast import run_benchmark
from mola_ts.data import ltsf_split
from mola_ts.forecast import DirectForecaster, MoLAForecaster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, one epoch")
    parser.add_argument("--out", default="runs/forecast_example", help="output folder")
    args = parser.parse_args()

    split = ltsf_split("ETTh1")  # train / val / test, scaled on the train rows (spec §3)
    sizes = {"d_model": 32, "d_ff": 32} if args.quick else {"d_model": 128, "d_ff": 128}
    epochs = 1 if args.quick else None

    # 1. one foundation, 48 steps ahead; it serves every horizon that is a multiple of 48
    foundation = DirectForecaster(96, 48, backbone_params=sizes, epochs=epochs or 5,
                                  patience=2, lr=5e-4, scale=False, random_state=2023)
    foundation.fit(split.train, y_val=split.val)

    # 2. MoLA: K = 96 / 48 segments, 6 shared LoRA experts of rank 8 on the feed-forward layers
    mola = MoLAForecaster(96, 96, segment_length=48, foundation=foundation, n_experts=6,
                          rank=8, epochs=epochs or 10, scale=False, random_state=2023)
    mola.fit(split.train, y_val=split.val)
    direct = DirectForecaster(96, 96, backbone_params=sizes, epochs=epochs or 10, scale=False,
                              random_state=2023).fit(split.train, y_val=split.val)
    print(f"test MSE  MoLA {-mola.score(split.test):.4f}  direct {-direct.score(split.test):.4f}")
    print(f"adaptation {mola.adapt_seconds_:.1f}s ({mola.n_trainable_parameters_} trainable "
          f"parameters); direct training {direct.train_seconds_:.1f}s")
    print(mola.predict(y_context=split.test.iloc[:96]).head())

    # 3. the benchmark: one foundation, four horizons of MoLA and the baselines
    run_benchmark(["ETTh1"], out=args.out, quick=args.quick)
    print(open(f"{args.out}/results.md").read())


if __name__ == "__main__":
    main()
