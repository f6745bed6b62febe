"""``mola-ts bench forecast``: the long-term forecasting benchmark (forecasting spec §3).

For every dataset: the LTSF split (train / val / test borders, StandardScaler fitted on the train
rows, metrics on the scaled data), lookback 96 (ILI: 36), every test window. One MoLA foundation
per dataset and seed (trained once, ``segment_length`` S steps ahead) is adapted to every
horizon (a multiple of S); the baselines are trained per horizon. Writes ``DIR/results.csv``
(dataset, horizon, model, mse, mae, train_seconds, trainable_params, total_params,
train_cpu_seconds, val_mse, seed), row by row, and ``DIR/results.md`` (the tables of
:mod:`mola_ts.bench.forecast_report`), and prints both.

Models: ``mola`` (iTransformer foundation + MoLA, the paper), ``direct`` (the same iTransformer
with one multi-output head; the iTransformer authors' sizes and learning rate), ``dlinear``,
``naive`` (seasonal naive), ``last`` (the last value repeated) and ``classical`` (statsmodels
ETS; only for short series). ``--options`` adds MoLA with one layer option each
(``mola-OPTION``, :data:`OPTIONS`). ``--seeds N`` runs every neural model (and the
foundation) with seeds ``seed .. seed + N - 1``; the deterministic baselines run once.

Resuming: rows already in ``DIR/results.csv`` (same dataset, horizon, model and seed) are not
recomputed, and each foundation is saved beside it (``foundation-DATASET-sSEED.mola``) and
reused, so a long run can be stopped and started again over several sittings.
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
from .forecast_report import PUBLISHED, results_markdown

__all__ = ["add_arguments", "run", "PUBLISHED", "OPTIONS", "DatasetPlan", "plan_for",
           "run_benchmark", "results_markdown", "BenchSettings"]

OPTIONS: dict[str, dict] = {
    "lora": {"adapter": "lora"},
    "topk": {"layers": {"router": "topk"}},
    "ldmole": {"layers": {"router": "ldmole"}},
    "mola2468": {"layers": {"plan": "mola2468"}},
    "mola8642": {"layers": {"plan": "mola8642"}},
    "hilo": {"layers": {"plan": "hilo"}},
    "guilomo": {"layers": {"plan": "guilomo"}},
    "mosld": {"layers": {"shared_A": True, "dropconnect": 0.1}},
    "sample2": {"segments_per_step": 2},
    "fast": {"segments_per_step": 1, "validation_stride": 4},
    "nodrop": {"foundation_dropout": False},
    "fast-nodrop": {"segments_per_step": 1, "validation_stride": 4, "foundation_dropout": False},
}
"""MoLA variants of ``--options``: the MoLAForecaster parameters of model ``mola-NAME``."""

MODELS = ("mola", "direct", "dlinear", "naive", "last", "classical",
          *(f"mola-{name}" for name in OPTIONS))
DEFAULT_MODELS = ("mola", "direct", "dlinear", "naive", "last", "classical")
DETERMINISTIC = ("naive", "last", "classical")  # run once, whatever the number of seeds
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
    parser.add_argument("--options", nargs="+", default=[], choices=[*OPTIONS, "all"],
                        help="MoLA layer options to run beside the models, each as model "
                             "mola-OPTION ('all': every one)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="run every neural model with this many seeds (seed, seed + 1, "
                             "...); the tables show mean ± std (default: 1)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: render DIR/results.md from DIR/results.csv")
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
           "train_cpu_seconds": cpu, "val_mse": _val_mse(model), "seed": task["seed"]}
    line = (f"  {task['dataset']:<6} H={horizon:<4} {model_name:<16} s{task['seed']} "
            f"mse {m_se:.4f} mae "
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
    lookback, epochs = task["lookback"], task["epochs"]
    common = {**task["common"], "random_state": task["seed"]}
    if model_name.startswith("mola"):
        variant = OPTIONS[model_name[len("mola-"):]] if model_name != "mola" else {}
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
    elif model_name == "last":
        model = SeasonalNaiveForecaster(h, season_length=1)
    else:
        # ETS reads three seasons of history (ILI: 156 weeks; the protocol's 36 rows cannot
        # hold one season), seasonal, no trend
        season = infer_season_length(task["frame"].index)
        model = ClassicalForecaster(h, lookback=max(lookback, 3 * season), trend=False)
    t0 = time.perf_counter()
    c0 = time.process_time()
    if model_name in DETERMINISTIC:
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
    seeds: int = 1


class _Results:
    """The rows of ``DIR/results.csv``: those of earlier sittings and this run's, written
    after every new row (rank 0 only) so that a stopped run loses at most the row in work."""

    def __init__(self, out: Path, log) -> None:
        self.path = out / "results.csv"
        self.log = log
        self.rows: list[dict] = []
        if self.path.exists():
            old = pd.read_csv(self.path)
            if "seed" not in old.columns:  # rows of a run before seeds were recorded
                old["seed"] = np.nan
            self.rows = old.to_dict("records")
        self.done = {self.key(r) for r in self.rows}

    @staticmethod
    def key(row: dict) -> tuple:
        seed = row.get("seed")
        seed = None if seed is None or seed != seed else int(seed)
        return row["dataset"], int(row["horizon"]), row["model"], seed

    def has(self, dataset: str, horizon: int, model: str, seed: int) -> bool:
        return (dataset, horizon, model, seed) in self.done

    def add(self, row: dict, line: str) -> None:
        self.rows.append(row)
        self.done.add(self.key(row))
        self.log(line, flush=True)
        if is_main_process():
            self.frame().to_csv(self.path, index=False)

    def put_in_order(self, keys: list[tuple]) -> None:
        """Move the rows of ``keys`` (dataset, horizon, model, seed) to the end, in that order."""
        rank = {key: i for i, key in enumerate(keys)}
        moved = sorted((r for r in self.rows if self.key(r) in rank),
                       key=lambda r: rank[self.key(r)])
        self.rows = [r for r in self.rows if self.key(r) not in rank] + moved
        if is_main_process():
            self.frame().to_csv(self.path, index=False)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def _foundation(base: dict, split, plan: DatasetPlan, settings: BenchSettings, seed: int,
                results: _Results, out: Path):
    """The MoLA foundation of one dataset and seed: loaded when an earlier sitting saved it,
    else trained, saved and recorded (its own row, scored at S)."""
    from mola_ts.forecast import DirectForecaster

    path = out / f"foundation-{base['dataset']}-s{seed}.mola"
    if path.exists():
        return DirectForecaster.load(path)
    sizes = base["tiny"] if settings.quick else plan.foundation
    foundation = DirectForecaster(
        base["lookback"], base["segment_length"], backbone_params=sizes,
        epochs=1 if settings.quick else settings.foundation_epochs,
        patience=settings.foundation_patience,
        lr=settings.foundation_lr or plan.foundation_lr, **base["common"], random_state=seed)
    t0, c0 = time.perf_counter(), time.process_time()
    foundation.fit(split.train, y_val=split.val)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if is_main_process():
        foundation.save(path)
    if not results.has(base["dataset"], base["segment_length"], "mola-foundation", seed):
        results.add(*_score_row({**base, "seed": seed}, "mola-foundation",
                                base["segment_length"], foundation, seconds, cpu))
    return foundation


def _run_tasks(tasks: list[dict], jobs: int, results: _Results) -> None:
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawned workers, one torch thread each; the costliest tasks are submitted first
        # (longest-processing-time order keeps the workers busy to the end); each row is
        # written as soon as its task finishes (a stopped run keeps every finished row), and
        # at the end this run's rows are put in task order
        cost = {"direct": 1.0, "dlinear": 0.1, "classical": 0.05, "naive": 0.0, "last": 0.0}
        order = sorted(range(len(tasks)), key=lambda i: -cost.get(tasks[i]["model_name"], 1.0)
                       * tasks[i]["horizon"])
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = [pool.submit(_fit_and_score, tasks[i]) for i in order]
            for future in as_completed(futures):
                results.add(*future.result())
        results.put_in_order([(t["dataset"], t["horizon"], t["model_name"], t["seed"])
                              for t in tasks])
    else:
        for task in tasks:
            results.add(*_fit_and_score(task))


def run_benchmark(datasets, horizons=None, models=DEFAULT_MODELS, *, out: str | os.PathLike,
                  settings: BenchSettings | None = None, log=_print, **overrides
                  ) -> pd.DataFrame:
    """Run the benchmark, write ``results.csv`` and ``results.md`` under ``out``; return rows.

    ``settings`` (a :class:`BenchSettings`) or its fields as keywords (``quick=True``,
    ``jobs=2``, ``seeds=3``, ...) say how. ``jobs > 1`` fits the (model, horizon) pairs of a
    dataset and seed in that many spawned worker processes (one torch thread each) once its
    MoLA foundation is trained; the rows are the same as a serial run's (every model is
    seeded), only the wall time changes. Rows already in ``out/results.csv`` are kept and not
    recomputed; the returned frame holds them and the new ones.
    """
    try:
        settings = replace(settings or BenchSettings(), **overrides)
    except TypeError as exc:
        raise TypeError(f"run_benchmark: {exc} (the settings are the fields of "
                        "BenchSettings)") from None
    jobs, quick = settings.jobs, settings.quick
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    seeds_n = settings.seeds
    if not isinstance(seeds_n, int) or isinstance(seeds_n, bool) or seeds_n < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds_n!r}")
    if jobs > 1 and is_distributed():
        raise ValueError("jobs > 1 cannot be combined with torchrun (every rank would spawn "
                         "its own workers); use one or the other")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; the models are {list(MODELS)}")
    from mola_ts.data import get_dataset_info, ltsf_split

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = _Results(out, log)
    seeds = [settings.seed + i for i in range(seeds_n)]
    durations: dict[str, float] = {}
    for name in datasets:
        info = get_dataset_info(name)
        split = ltsf_split(name, data_home=settings.data_home)
        lookback = split.lookback
        hs = list(horizons or info.horizons)
        if quick:
            hs = hs[:2]
        plan = plan_for(info.name, hs)
        seg = settings.segment_length or plan.segment_length
        bad = [h for h in hs if h % seg]
        if bad and any(m.startswith("mola") for m in models):
            raise ValueError(f"horizons {bad} are not multiples of segment length {seg}")
        frame = pd.concat([split.train, split.val.iloc[lookback:], split.test.iloc[lookback:]])
        t_start = time.perf_counter()
        log(f"== {info.name}: {len(frame)} rows used, lookback {lookback}, horizons {hs}, "
            f"segment {seg}, seeds {seeds}", flush=True)
        base = {"dataset": info.name, "lookback": lookback, "segment_length": seg,
                "frame": frame, "target_start": len(split.train) + len(split.val) - lookback,
                "target_end": len(frame), "tiny": {"d_model": 32, "d_ff": 32, "n_heads": 4},
                "common": {"scale": False, "device": settings.device, "batch_size": 32}}
        for seed in seeds:
            todo = [(h, m) for h in hs for m in models
                    if not (m == "classical" and len(frame) >= SHORT_SERIES)
                    and not (m in DETERMINISTIC and seed != seeds[0])
                    and not results.has(info.name, h, m, seed)]
            foundation = None
            if any(m.startswith("mola") for _, m in todo):
                foundation = _foundation(base, split, plan, settings, seed, results, out)
            tasks = [{**base, "model_name": m, "horizon": h, "seed": seed, "plan": plan,
                      "foundation": foundation if m.startswith("mola") else None,
                      "epochs": 1 if quick else 10, "quick": quick, "train": split.train,
                      "val": split.val} for h, m in todo]
            _run_tasks(tasks, jobs, results)
        durations[info.name] = time.perf_counter() - t_start
        log(f"== {info.name} done in {durations[info.name]:.1f}s wall", flush=True)
    table = results.frame()
    if is_main_process():  # every rank has the same results under torchrun; rank 0 writes
        (out / "results.md").write_text(results_markdown(table, durations, published=not quick))
    return table


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MOLA_TS_NO_PROGRESS", "1")
    out = Path(args.out)
    if args.report:
        if not (out / "results.csv").exists():
            raise FileNotFoundError(f"--report renders {out / 'results.csv'}, which does not "
                                    "exist")
        table = pd.read_csv(out / "results.csv")
        (out / "results.md").write_text(results_markdown(table, published=not args.quick))
    else:
        options = list(OPTIONS) if "all" in args.options else args.options
        models = list(dict.fromkeys([*args.models, *(f"mola-{o}" for o in options)]))
        run_benchmark(args.datasets, args.horizons, models, out=out, quick=args.quick,
                      seed=args.seed, segment_length=args.segment_length, device=args.device,
                      data_home=args.data_home, foundation_lr=args.foundation_lr,
                      foundation_epochs=args.foundation_epochs,
                      foundation_patience=args.foundation_patience, jobs=args.jobs,
                      seeds=args.seeds)
    if is_main_process():
        print()
        print((out / "results.md").read_text())
        print(f"wrote {out / 'results.csv'} and {out / 'results.md'}")
    return 0
