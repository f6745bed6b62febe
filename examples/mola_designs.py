"""Compare MOLA designs on the Tennessee Eastman data: training-side criteria first.

Every variant is fitted on d00 (normal training run) only. The criteria that choose settings use
the fault *training* runs d01..d21.dat (faulty from their first row): the alarm rate on d03, d09
and d15 (practically normal: a between-run false-alarm proxy), the mean alarm rate over the 18
detectable faults, and the same at the threshold giving 1 % alarms on the proxy runs. The test
columns (d00_te and dNN_te) are printed for the record, labelled, and must not choose anything.
Also prints the scoring speed (one thread, CPU time) of each variant.

    python examples/mola_designs.py                       # the default and the first design
    python examples/mola_designs.py '{"cusum_allowance": 0.3}' '{"design": "level"}'

Each argument is a JSON dict of MOLAMonitor parameters. Needs the TEP files (``bibmon``).
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch

from mola_ts.data import DETECTABLE_FAULTS, load_tep
from mola_ts.monitor import MOLAMonitor

FIRST_DESIGN = {"design": "level", "limit": "holdout", "fusion_scale": "probability",
                "window": 10, "hidden_size": 32, "code_size": 8, "epochs": 200, "patience": 20,
                "cusum_allowance": 0.5, "code_statistics": "fit"}
PROXY = (3, 9, 15)


def evaluate(params: dict) -> dict:
    start = time.perf_counter()
    monitor = MOLAMonitor(**params).fit(load_tep(0, "train"))
    fit_s = time.perf_counter() - start

    def run(fault, split):
        stats = monitor.statistics(load_tep(fault, split))
        return stats["score"].to_numpy(), stats["alarm"].to_numpy(), stats["warmup"].to_numpy()

    train = {f: run(f, "train") for f in range(1, 22)}
    scored = {f: train[f][2] == 0 for f in train}
    proxy_scores = np.concatenate([train[f][0][scored[f]] for f in PROXY])
    proxy_threshold = np.quantile(proxy_scores, 0.99)
    test = {f: run(f, "test") for f in range(22)}
    normal = test[0][0][160:]
    oracle = np.quantile(normal, 0.99)
    rows = pd.concat([load_tep(f, "test") for f in (1, 2, 4, 5, 6)], ignore_index=True)
    t0 = time.process_time()
    monitor.statistics(rows)
    batch = len(rows) / (time.process_time() - t0)
    stream = monitor.stream()
    stream.update(rows.iloc[:20])
    t0 = time.process_time()
    for row in rows.iloc[20:220].to_numpy():
        stream.update(row)
    per_row_ms = 1000 * (time.process_time() - t0) / 200
    pct = lambda v: round(100 * float(v), 2)  # noqa: E731
    return {
        "params": params, "fit_s": round(fit_s, 1),
        "TRAIN_proxy_far": pct(np.mean(np.concatenate([train[f][1][scored[f]] for f in PROXY]))),
        "TRAIN_fdr": pct(np.mean([train[f][1][scored[f]].mean() for f in DETECTABLE_FAULTS])),
        "TRAIN_fdr_at_1pct_proxy": pct(np.mean([(train[f][0][scored[f]] > proxy_threshold).mean()
                                                for f in DETECTABLE_FAULTS])),
        "TEST_far": pct(test[0][1][160:].mean()),
        "TEST_far_first160": pct(np.mean([test[f][1][:160].mean() for f in range(1, 22)])),
        "TEST_fdr": pct(np.mean([test[f][1][160:].mean() for f in DETECTABLE_FAULTS])),
        "TEST_fdr_at_1pct_far": pct(np.mean([(test[f][0][160:] > oracle).mean()
                                             for f in DETECTABLE_FAULTS])),
        "batch_samples_per_cpu_s": round(batch), "stream_ms_per_row": round(per_row_ms, 2),
    }


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    variants = [json.loads(a) for a in argv] or [{}, FIRST_DESIGN]
    for params in variants:
        print(json.dumps(evaluate(params)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
