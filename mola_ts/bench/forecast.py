"""``mola-ts bench forecast``: the long-term forecasting benchmark (forecasting spec §3).

For every dataset: the LTSF split (train / val / test borders, StandardScaler fitted on the train
rows, metrics on the scaled data), lookback 96 (ILI: 36), every test window. One MoLA foundation
per dataset (trained once, ``segment_length`` S steps ahead) is adapted to every horizon (a
multiple of S); the baselines are trained per horizon. Writes ``DIR/results.csv`` (dataset,
horizon, model, mse, mae, train_seconds, trainable_params, total_params) and ``DIR/results.md``
(our numbers beside the published ones of spec §4), and prints both.

Models: ``mola`` (iTransformer foundation + MoLA, the paper), ``direct`` (the same iTransformer
with one multi-output head; the iTransformer authors' sizes and learning rate), ``dlinear``,
``naive`` (seasonal naive) and ``classical`` (statsmodels ETS; only for short series). Optional:
``mola-lora`` (independent LoRA per segment), ``mola-ldmole`` (dynamic routing).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..training import is_distributed, is_main_process

__all__ = ["add_arguments", "run", "PUBLISHED", "DatasetPlan", "plan_for", "run_benchmark",
           "BenchSettings"]

# Spec §4: mean of the four horizons, lookback 96 (MSE, MAE).
PUBLISHED: dict[str, dict[str, tuple[float, float]]] = {
    "ETTh1": {"iTransformer": (0.454, 0.447), "PatchTST": (0.469, 0.454),
              "DLinear": (0.456, 0.452), "TimeMixer": (0.447, 0.440)},
    "ETTh2": {"iTransformer": (0.383, 0.407), "PatchTST": (0.387, 0.407),
              "DLinear": (0.559, 0.515), "TimeMixer": (0.364, 0.395)},
    "ETTm1": {"iTransformer": (0.407, 0.410), "PatchTST": (0.387, 0.400),
              "DLinear": (0.403, 0.407), "TimeMixer": (0.381, 0.395)},
    "Weather": {"iTransformer": (0.258, 0.278), "PatchTST": (0.259, 0.281),
                "DLinear": (0.265, 0.317), "TimeMixer": (0.240, 0.271)},
    "Exchange": {"iTransformer": (0.360, 0.403), "PatchTST": (0.367, 0.404),
                 "DLinear": (0.354, 0.414)},
}
# Spec §4: iTransformer per horizon.
PUBLISHED_ITRANSFORMER: dict[str, dict[int, tuple[float, float]]] = {
    "ETTh1": {96: (0.386, 0.405), 192: (0.441, 0.436), 336: (0.487, 0.458),
              720: (0.503, 0.491)},
    "ETTh2": {96: (0.297, 0.349), 192: (0.380, 0.400), 336: (0.428, 0.432),
              720: (0.427, 0.445)},
}

MODELS = ("mola", "direct", "dlinear", "naive", "classical", "mola-lora", "mola-ldmole")
DEFAULT_MODELS = ("mola", "direct", "dlinear", "naive", "classical")
SHORT_SERIES = 2000  # the classical model runs on datasets with fewer rows than this


@dataclass
class DatasetPlan:
    """Benchmark settings of one dataset (choices where the spec leaves room are stated)."""

    segment_length: int
    foundation: dict = field(default_factory=lambda: {"d_model": 128, "d_ff": 128})
    direct_sizes: dict[int, dict] = field(default_factory=dict)  # horizon -> sizes
    direct_lr: float = 1e-4
    dlinear_lr: float = 1e-4
    foundation_lr: float = 5e-4
    adapt_lr: float = 1e-3

    def direct_for(self, horizon: int) -> dict:
        if horizon in self.direct_sizes:
            return self.direct_sizes[horizon]
        return self.direct_sizes.get(0, {"d_model": 128, "d_ff": 128})


def plan_for(name: str, horizons) -> DatasetPlan:
    """Settings: MoLA reference sizes (d 128) for the foundation; the iTransformer authors'
    sizes and lr for the direct model on ETTh1 (256 for H <= 192, 512 above) and ETTh2 (128);
    S is the largest segment dividing every horizon (48 for 96..720, 12 for ILI's 24..60)."""
    segment = math.gcd(*[int(h) for h in horizons])
    if name == "ETTh1":
        big = {"d_model": 512, "d_ff": 512}
        small = {"d_model": 256, "d_ff": 256}
        return DatasetPlan(segment, direct_sizes={96: small, 192: small, 336: big, 720: big,
                                                  0: small})
    if name == "ILI":
        # ILI has ~20 training batches per epoch (ETTh1: ~265): learning rates picked by the
        # validation loss of a small sweep (direct 1e-3 / 3e-3 / 1e-2, DLinear 1e-3 / 1e-2 /
        # 5e-2, foundation 5e-4 / 1e-3, adaptation 1e-3 / 1e-2)
        return DatasetPlan(segment, direct_lr=3e-3, dlinear_lr=5e-2, foundation_lr=1e-3,
                           adapt_lr=1e-2)
    return DatasetPlan(segment)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", nargs="+", default=["ETTh1", "ETTh2", "ILI"],
                        help="registered dataset names (default: ETTh1 ETTh2 ILI)")
    parser.add_argument("--horizons", nargs="+", type=int, default=None,
                        help="horizons for every dataset (default: each dataset's standard four)")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS,
                        help="models to run (default: %(default)s)")
    parser.add_argument("--segment-length", type=int, default=None,
                        help="MoLA segment S (default: gcd of the horizons)")
    parser.add_argument("--out", default="runs/forecast", help="output folder")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny models, one epoch, first two horizons")
    parser.add_argument("--foundation-lr", type=float, default=None,
                        help="MoLA foundation learning rate (default: 5e-4, the reference)")
    parser.add_argument("--foundation-epochs", type=int, default=5,
                        help="MoLA foundation epochs (default: 5, the reference)")
    parser.add_argument("--foundation-patience", type=int, default=2,
                        help="MoLA foundation early-stopping patience (default: 2)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes for the models and horizons of a dataset, one "
                             "torch thread each (default: 1, in this process)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-home", default=None)


def _evaluate(model, frame: pd.DataFrame, target_start: int, target_end: int, horizon: int):
    """MSE/MAE over every window whose target lies in rows [target_start, target_end)."""
    from mola_ts.data import sliding_windows
    from mola_ts.metrics import mae, mse

    ctx = model.context_length_
    if target_start - ctx < 0:
        raise ValueError(f"model context {ctx} reaches before the start of the data")
    values = frame.to_numpy(dtype=np.float64)
    pred = model.predict_windows(frame.iloc[target_start - ctx:target_end])
    _, target = sliding_windows(values[target_start - 1:target_end], 1, horizon)
    return mse(target, pred), mae(target, pred)


def _params(model) -> tuple[int, int]:
    return (int(getattr(model, "n_trainable_parameters_", 0)),
            int(getattr(model, "n_parameters_", 0)))


def _worker_init() -> None:
    """A benchmark worker process: one torch thread, no progress bars."""
    import torch

    os.environ["MOLA_TS_NO_PROGRESS"] = "1"
    torch.set_num_threads(1)


def _score_row(task: dict, model_name: str, horizon: int, model, seconds: float,
               cpu: float) -> tuple[dict, str]:
    """The results row of a fitted model (test MSE / MAE over every window) and its log line."""
    m_se, m_ae = _evaluate(model, task["frame"], task["target_start"], task["target_end"],
                           horizon)
    trainable, total = _params(model)
    row = {"dataset": task["dataset"], "horizon": horizon, "model": model_name,
           "mse": m_se, "mae": m_ae, "train_seconds": seconds,
           "trainable_params": trainable, "total_params": total,
           "train_cpu_seconds": cpu, "val_mse": _val_mse(model)}
    line = (f"  {task['dataset']:<6} H={horizon:<4} {model_name:<16} mse {m_se:.4f} mae "
            f"{m_ae:.4f}  train {seconds:7.1f}s wall {cpu:7.1f}s cpu  "
            f"params {trainable}/{total}")
    return row, line


def _fit_and_score(task: dict) -> tuple[dict, str]:
    """Build, fit and score one (model, horizon) of a dataset (run in a worker with --jobs)."""
    from mola_ts.forecast import (
        ClassicalForecaster,
        DirectForecaster,
        DLinearForecaster,
        MoLAForecaster,
        SeasonalNaiveForecaster,
    )
    from mola_ts.forecast.baselines import infer_season_length

    model_name, h, plan = task["model_name"], task["horizon"], task["plan"]
    lookback, common, epochs = task["lookback"], task["common"], task["epochs"]
    if model_name.startswith("mola"):
        variant = {"mola": {}, "mola-lora": {"adapter": "lora"},
                   "mola-ldmole": {"router": "ldmole"}}[model_name]
        model = MoLAForecaster(lookback, h, segment_length=task["segment_length"],
                               foundation=task["foundation"], epochs=epochs, patience=3,
                               lr=plan.adapt_lr, **variant, **common)
    elif model_name == "direct":
        sizes = task["tiny"] if task["quick"] else plan.direct_for(h)
        model = DirectForecaster(lookback, h, backbone_params=sizes, epochs=epochs,
                                 patience=3, lr=plan.direct_lr, **common)
    elif model_name == "dlinear":
        model = DLinearForecaster(lookback, h, epochs=epochs, patience=3,
                                  lr=plan.dlinear_lr, **common)
    elif model_name == "naive":
        model = SeasonalNaiveForecaster(h)
    else:
        # ETS reads three seasons of history (ILI: 156 weeks; the protocol's 36 rows cannot
        # hold one season), seasonal, no trend
        season = infer_season_length(task["frame"].index)
        model = ClassicalForecaster(h, lookback=max(lookback, 3 * season), trend=False)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if model_name in ("naive", "classical"):
        model.fit(task["train"])
    else:
        model.fit(task["train"], y_val=task["val"])
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if model_name.startswith("mola"):
        seconds = model.adapt_seconds_  # the foundation has its own row
    return _score_row(task, model_name, h, model, seconds, cpu)


def _print(*args, flush: bool = False) -> None:
    if is_main_process():  # under torchrun every rank runs the benchmark; rank 0 reports
        print(*args, flush=flush)


def _val_mse(model) -> float:
    """Best validation MSE seen in training (MoLA: mean of the segments), NaN if none."""
    per_segment = getattr(model, "segment_val_loss_", None)
    if per_segment is not None:
        return float(np.mean(per_segment))
    losses = [h["val_loss"] for h in getattr(model, "history_", []) if "val_loss" in h]
    return float(min(losses)) if losses else float("nan")


@dataclass(frozen=True)
class BenchSettings:
    """How :func:`run_benchmark` trains and runs (every field is also a keyword of it)."""

    quick: bool = False
    seed: int = 2023
    segment_length: int | None = None
    device: str = "cpu"
    data_home: str | os.PathLike | None = None
    foundation_lr: float | None = None
    foundation_epochs: int = 5
    foundation_patience: int = 2
    jobs: int = 1


def run_benchmark(datasets, horizons=None, models=DEFAULT_MODELS, *, out: str | os.PathLike,
                  settings: BenchSettings | None = None, log=_print, **overrides
                  ) -> pd.DataFrame:
    """Run the benchmark, write ``results.csv`` and ``results.md`` under ``out``; return rows.

    ``settings`` (a :class:`BenchSettings`) or its fields as keywords (``quick=True``,
    ``jobs=2``, ...) say how. ``jobs > 1`` fits the (model, horizon) pairs of a dataset in that
    many spawned worker processes (one torch thread each) once its MoLA foundation is trained;
    the rows are the same as a serial run's (every model is seeded), only the wall time changes.
    """
    try:
        settings = replace(settings or BenchSettings(), **overrides)
    except TypeError as exc:
        raise TypeError(f"run_benchmark: {exc} (the settings are the fields of "
                        "BenchSettings)") from None
    quick, seed, segment_length = settings.quick, settings.seed, settings.segment_length
    device, data_home, jobs = settings.device, settings.data_home, settings.jobs
    foundation_lr = settings.foundation_lr
    foundation_epochs, foundation_patience = (settings.foundation_epochs,
                                              settings.foundation_patience)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if jobs > 1 and is_distributed():
        raise ValueError("jobs > 1 cannot be combined with torchrun (every rank would spawn "
                         "its own workers); use one or the other")
    from mola_ts.data import get_dataset_info, ltsf_split
    from mola_ts.forecast import DirectForecaster

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    durations: dict[str, float] = {}
    bench_start = time.perf_counter()
    for name in datasets:
        info = get_dataset_info(name)
        split = ltsf_split(name, data_home=data_home)
        lookback = split.lookback
        hs = list(horizons or info.horizons)
        if quick:
            hs = hs[:2]
        plan = plan_for(info.name, hs)
        seg = segment_length or plan.segment_length
        bad = [h for h in hs if h % seg]
        if bad and any(m.startswith("mola") for m in models):
            raise ValueError(f"horizons {bad} are not multiples of segment length {seg}")
        epochs = 1 if quick else 10
        f_epochs = 1 if quick else foundation_epochs
        tiny = {"d_model": 32, "d_ff": 32, "n_heads": 4}
        frame = pd.concat([split.train, split.val.iloc[lookback:], split.test.iloc[lookback:]])
        target_start = len(split.train) + len(split.val) - lookback
        target_end = len(frame)
        common = {"scale": False, "device": device, "random_state": seed, "batch_size": 32}
        t_start = time.perf_counter()
        log(f"== {info.name}: {len(frame)} rows used, lookback {lookback}, horizons {hs}, "
            f"segment {seg}", flush=True)

        def record(row: dict, line: str) -> None:
            rows.append(row)
            log(line, flush=True)

        base = {"dataset": info.name, "lookback": lookback, "segment_length": seg,
                "frame": frame, "target_start": target_start, "target_end": target_end,
                "common": common}
        foundation = None
        if any(m.startswith("mola") for m in models):
            foundation = DirectForecaster(
                lookback, seg, backbone_params=tiny if quick else plan.foundation,
                epochs=f_epochs, patience=foundation_patience,
                lr=foundation_lr or plan.foundation_lr, **common)
            t0 = time.perf_counter()
            c0 = time.process_time()
            foundation.fit(split.train, y_val=split.val)
            record(*_score_row(base, "mola-foundation", seg, foundation,
                               time.perf_counter() - t0, time.process_time() - c0))
        tasks = []
        for h in hs:
            for model_name in models:
                if model_name == "classical" and len(frame) >= SHORT_SERIES:
                    continue
                tasks.append({**base, "model_name": model_name, "horizon": h,
                              "foundation": foundation if model_name.startswith("mola")
                              else None,
                              "epochs": epochs, "plan": plan, "quick": quick, "tiny": tiny,
                              "train": split.train, "val": split.val})
        if jobs > 1 and len(tasks) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawned workers, one torch thread each; the costliest tasks are submitted first
            # (longest-processing-time order keeps the workers busy to the end); the rows are
            # recorded in task order
            cost = {"mola": 1.0, "mola-lora": 1.0, "mola-ldmole": 1.2, "direct": 1.0,
                    "dlinear": 0.1, "classical": 0.05, "naive": 0.0}
            order = sorted(range(len(tasks)), key=lambda i: -cost[tasks[i]["model_name"]]
                           * tasks[i]["horizon"])
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init) as pool:
                futures = {i: pool.submit(_fit_and_score, tasks[i]) for i in order}
                for i in range(len(tasks)):
                    record(*futures[i].result())
        else:
            for task in tasks:
                record(*_fit_and_score(task))
        durations[info.name] = time.perf_counter() - t_start
        log(f"== {info.name} done in {durations[info.name]:.1f}s wall", flush=True)
    results = pd.DataFrame(rows)
    if is_main_process():  # every rank has the same results under torchrun; rank 0 writes
        results.to_csv(out / "results.csv", index=False)
        markdown = results_markdown(results, durations)
        markdown += f"\nTotal wall time: {time.perf_counter() - bench_start:.1f}s\n"
        (out / "results.md").write_text(markdown)
    return results


def results_markdown(results: pd.DataFrame, durations: dict[str, float] | None = None) -> str:
    """Per dataset: MSE / MAE per horizon and model, the mean of the horizons, the published
    means (spec §4) and the adaptation time of MoLA against training the direct model."""
    lines = []
    durations = durations or {}
    for name, part in results.groupby("dataset", sort=False):
        part = part[part["model"] != "mola-foundation"]
        models = list(dict.fromkeys(part["model"]))
        horizons = sorted(part["horizon"].unique())
        pub_h = PUBLISHED_ITRANSFORMER.get(name, {})
        header = ["H"] + models + (["iTransformer (published)"] if pub_h else [])
        lines += [f"### {name} (MSE / MAE, scaled data, every test window)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for h in horizons:
            cells = [str(h)]
            for m in models:
                r = part[(part["horizon"] == h) & (part["model"] == m)]
                cells.append("-" if r.empty else f"{r.mse.iloc[0]:.3f} / {r.mae.iloc[0]:.3f}")
            if pub_h:
                p = pub_h.get(h)
                cells.append("-" if p is None else f"{p[0]:.3f} / {p[1]:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
        means = part.groupby("model")[["mse", "mae"]].mean()
        cells = ["mean"]
        for m in models:
            n = (part["model"] == m).sum()
            cells.append(f"**{means.loc[m, 'mse']:.3f}** / {means.loc[m, 'mae']:.3f}"
                         if n == len(horizons) else "-")
        if pub_h:
            vals = np.array(list(pub_h.values()))
            cells.append(f"{vals[:, 0].mean():.3f} / {vals[:, 1].mean():.3f}")
        lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        pub = PUBLISHED.get(name)
        if pub:
            lines.append("Published means (lookback 96, spec §4): " + ", ".join(
                f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in pub.items()))
            lines.append("")
        if {"mola", "direct"} <= set(models):
            lines += ["| H | MoLA adaptation s | Direct training s | MoLA trainable | "
                      "Direct trainable |", "|---|---|---|---|---|"]
            for h in horizons:
                a = part[(part["horizon"] == h) & (part["model"] == "mola")]
                d = part[(part["horizon"] == h) & (part["model"] == "direct")]
                if a.empty or d.empty:
                    continue
                lines.append(f"| {h} | {a.train_seconds.iloc[0]:.1f} | "
                             f"{d.train_seconds.iloc[0]:.1f} | {a.trainable_params.iloc[0]} | "
                             f"{d.trainable_params.iloc[0]} |")
            found = results[(results["dataset"] == name) &
                            (results["model"] == "mola-foundation")]
            if not found.empty:
                lines.append(f"\nMoLA foundation (S = {found.horizon.iloc[0]}): trained once in "
                             f"{found.train_seconds.iloc[0]:.1f}s, test MSE at S "
                             f"{found.mse.iloc[0]:.3f}.")
            lines.append("")
        if name in durations:
            lines += [f"{name}: whole benchmark (every model and horizon, evaluation included) "
                      f"{durations[name]:.1f}s wall.", ""]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MOLA_TS_NO_PROGRESS", "1")
    run_benchmark(args.datasets, args.horizons, args.models, out=args.out, quick=args.quick,
                  seed=args.seed, segment_length=args.segment_length, device=args.device,
                  data_home=args.data_home, foundation_lr=args.foundation_lr,
                  foundation_epochs=args.foundation_epochs,
                  foundation_patience=args.foundation_patience, jobs=args.jobs)
    if is_main_process():
        print()
        print((Path(args.out) / "results.md").read_text())
        print(f"wrote {Path(args.out) / 'results.csv'} and {Path(args.out) / 'results.md'}")
    return 0
