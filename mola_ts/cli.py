"""The ``mola-ts`` command line: datasets, demos and benchmarks."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "build_parser"]


def _datasets_list(args: argparse.Namespace) -> int:
    from .data import DATASETS, get_data_home, verify_dataset

    home = get_data_home(args.data_home)
    print(f"data home: {home}")
    header = f"{'name':<12} {'freq':<6} {'lookback':>8}  {'horizons':<20} {'local':<8} licence"
    print(header)
    print("-" * len(header))
    for name, info in DATASETS.items():
        if info.files:
            statuses = {row[1] for row in verify_dataset(info, home)}
            local = "missing" if "missing" in statuses else (
                "BAD" if "mismatch" in statuses else "yes")
        else:
            local = "bundled"
        horizons = ",".join(map(str, info.horizons)) or "-"
        print(f"{name:<12} {info.frequency:<6} {info.lookback:>8}  {horizons:<20} {local:<8} "
              f"{info.licence}")
    return 0


def _datasets_fetch(args: argparse.Namespace) -> int:
    from .data import fetch_file, get_data_home, get_dataset_info, load_dataset, load_tep

    info = get_dataset_info(args.name)
    if info.split == "tep":
        load_tep(0, "train")  # raises a clear error when bibmon is absent
        print("TEP: the 44 Braatz files are read from the installed bibmon package")
        return 0
    if len(info.files) == 1 and info.date_column is not None:
        # one table: the loader's own fetch and checks, so both give the same verdict
        frame = load_dataset(info.name, data_home=args.data_home, download_if_missing=True)
        remote = info.files[0]
        how = "sha256 verified" if remote.sha256 else \
            "no published sha256: rows checked, hash recorded"
        path = get_data_home(args.data_home) / remote.path
        print(f"{info.name}: {path} ({how}; {len(frame)} rows, {frame.index[0]} to "
              f"{frame.index[-1]})")
        return 0
    for remote in info.files:
        path = fetch_file(remote, data_home=args.data_home, download_if_missing=True)
        print(f"{info.name}: {path} (sha256 verified)")
    return 0


def _datasets_verify(args: argparse.Namespace) -> int:
    from .data import DATASETS, get_dataset_info, verify_dataset

    names = args.names or list(DATASETS)
    failed = False
    for name in names:
        info = get_dataset_info(name)
        for path, status, expected, actual in verify_dataset(info, args.data_home):
            if status == "missing":
                continue
            line = f"{status:<12} {info.name:<12} {path}"
            if status == "mismatch":
                failed = True
                line += f"\n             expected {expected}\n             actual   {actual}"
            print(line)
    return 1 if failed else 0


def _datasets_simulate(args: argparse.Namespace) -> int:
    from .data import simulate_tep

    disturbance = args.disturbance
    if disturbance is not None and disturbance.isdigit():
        disturbance = int(disturbance)
    run = simulate_tep(args.hours, seed=args.seed, mode=args.mode, disturbance=disturbance,
                       onset_hours=args.onset, settle_hours=args.settle,
                       cache=not args.no_cache, data_home=args.data_home)
    how = "read from the cache" if run.attrs["cached"] else \
        f"simulated in {run.attrs['cpu_seconds']:.1f} CPU s"
    what = f"mode {args.mode}, seed {args.seed}" + (
        f", {run.attrs['disturbance']} from {args.onset:g} h" if args.disturbance else "")
    print(f"TEP ({what}): {len(run)} rows x {run.shape[1]} columns, {how}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        run.to_csv(args.out)
        print(f"wrote {args.out}")
    return 0


def _runner(module_name: str):
    return importlib.import_module(module_name)


def _selects(argv: Sequence[str] | None, group: str, name: str) -> bool:
    """Whether ``argv`` runs ``mola-ts GROUP NAME`` (None: build every command)."""
    if argv is None:
        return True
    words = [w for w in argv if not w.startswith("-")]
    return len(words) >= 2 and words[0] == group and words[1] == name


# the operator service (mola_ts.serve, the serve extra): command -> one-line help
_SERVICE_COMMANDS = {
    "serve": "serve a saved monitor over HTTP: samples in, alarms and a live page out",
    "replay": "post a recorded or simulated run to a running service, paced",
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and tests).

    With ``argv`` (the command line about to be parsed) only the runner module of the command
    it names is imported to add its arguments, so ``mola-ts --version`` and ``--help`` never
    import torch or the benchmark modules; ``argv=None`` builds every command (for the docs).
    """
    from . import __version__
    from .bench import BENCHMARKS, DEMOS

    parser = argparse.ArgumentParser(
        prog="mola-ts", description="MoLA forecasting and MOLA process monitoring toolkit."
    )
    parser.add_argument("--version", action="version", version=f"mola-ts {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ds = sub.add_parser("datasets", help="list, fetch and verify the benchmark datasets")
    ds_sub = ds.add_subparsers(dest="action", required=True)
    p = ds_sub.add_parser("list", help="the registered datasets and whether they are local")
    p.add_argument("--data-home", default=None, help="data folder (default: $MOLA_TS_DATA)")
    p.set_defaults(func=_datasets_list)
    p = ds_sub.add_parser("fetch", help="download one dataset and verify its sha256")
    p.add_argument("name")
    p.add_argument("--data-home", default=None)
    p.set_defaults(func=_datasets_fetch)
    p = ds_sub.add_parser(
        "verify", help="check the hash of every present file (exit 1 on any mismatch)"
    )
    p.add_argument("names", nargs="*", help="datasets to check (default: all)")
    p.add_argument("--data-home", default=None)
    p.set_defaults(func=_datasets_verify)
    p = ds_sub.add_parser("simulate", help="simulate Tennessee Eastman data (needs the sim extra)")
    p.add_argument("plant", choices=["tep"], help="the simulated plant")
    p.add_argument("--hours", type=float, default=48.0, help="hours returned (20 rows per hour)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", type=int, default=1, choices=range(1, 7), help="operating mode")
    p.add_argument("--disturbance", default=None,
                   help="the simulator's disturbance name idv_01..idv_28 (or its number)")
    p.add_argument("--onset", type=float, default=0.0,
                   help="hours after the first returned row when the disturbance switches on")
    p.add_argument("--settle", type=float, default=None,
                   help="hours simulated and dropped first (default: per mode)")
    p.add_argument("--out", type=Path, default=None, help="CSV file to write")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--data-home", default=None, help="cache folder (default: $MOLA_TS_DATA)")
    p.set_defaults(func=_datasets_simulate)

    for name, help_line in _SERVICE_COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line)
        if argv is None or [w for w in argv if not w.startswith("-")][:1] == [name]:
            module = _runner("mola_ts.serve.commands")  # argparse only: no FastAPI, no torch
            getattr(module, f"add_{name}_arguments")(p)
            p.set_defaults(func=getattr(module, f"run_{name}"))

    for group, table, help_text in (("demo", DEMOS, "run a demonstration"),
                                    ("bench", BENCHMARKS, "run a benchmark")):
        if not table:
            continue
        grp = sub.add_parser(group, help=help_text)
        grp_sub = grp.add_subparsers(dest="target", required=True)
        for name, (module_name, help_line) in table.items():
            p = grp_sub.add_parser(name, help=help_line, description=help_line)
            if _selects(argv, group, name):
                module = _runner(module_name)
                module.add_arguments(p)
                p.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mola-ts`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        print(f"mola-ts: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
