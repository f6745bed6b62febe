"""The dataset registry: where each benchmark file comes from, its hash, licence and protocol.

The registry is the single source of truth for the loaders (``fetch.py``), the long-term
forecasting split (``protocol.py``) and the ``mola-ts datasets`` command. The short human
cards live in the top-level ``datasets/`` folder of the repository.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RemoteFile", "DatasetInfo", "DATASETS", "get_dataset_info", "list_datasets"]

_ETT_BASE = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
# The Autoformer / Time-Series-Library bundle is distributed on Google Drive, which cannot be
# fetched by URL. This Hugging Face mirror of the bundle keeps the same file names; the hash of
# every file whose sha256 is published is checked, so a changed mirror is detected.
_TSLIB_BASE = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/"

_ETT_CITATION = (
    "Zhou et al., Informer: Beyond Efficient Transformer for Long Sequence Time-Series "
    "Forecasting, AAAI 2021."
)
_AUTOFORMER_CITATION = (
    "Wu et al., Autoformer: Decomposition Transformers with Auto-Correlation for Long-Term "
    "Series Forecasting, NeurIPS 2021 (dataset bundle)."
)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name inside the data home, its URL and its sha256.

    ``sha256`` is ``None`` when no trusted hash is known; the loader then records the hash of
    the first download and warns once (see ``fetch.py``).
    """

    path: str
    url: str | None
    sha256: str | None


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the toolkit knows about one dataset."""

    name: str
    files: tuple[RemoteFile, ...]
    licence: str
    citation: str
    frequency: str
    lookback: int
    horizons: tuple[int, ...]
    split: str  # "ett_hour", "ett_minute", "ratio" (70/10/20) or "tep"
    date_column: str | None = "date"
    n_rows: int | None = None
    description: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)


def _ltsf(name: str, path: str, url: str | None, sha256: str | None, **card) -> DatasetInfo:
    """A one-file long-term-forecasting dataset: lookback 96 and horizons 96..720 unless the
    ``card`` (the other :class:`DatasetInfo` fields) says otherwise."""
    card = {"lookback": 96, "horizons": (96, 192, 336, 720), **card}
    return DatasetInfo(name=name, files=(RemoteFile(path=path, url=url, sha256=sha256),), **card)


DATASETS: dict[str, DatasetInfo] = {
    "ETTh1": _ltsf(
        "ETTh1", "ett/ETTh1.csv", _ETT_BASE + "ETTh1.csv",
        "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
        licence="CC BY-ND 4.0", citation=_ETT_CITATION, frequency="h", split="ett_hour",
        n_rows=17420, description="Electricity transformer temperature, station 1, hourly.",
        source="https://github.com/zhouhaoyi/ETDataset",
    ),
    "ETTh2": _ltsf(
        "ETTh2", "ett/ETTh2.csv", _ETT_BASE + "ETTh2.csv",
        "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
        licence="CC BY-ND 4.0", citation=_ETT_CITATION, frequency="h", split="ett_hour",
        n_rows=17420, description="Electricity transformer temperature, station 2, hourly.",
        source="https://github.com/zhouhaoyi/ETDataset",
    ),
    "ETTm1": _ltsf(
        "ETTm1", "ett/ETTm1.csv", _ETT_BASE + "ETTm1.csv", None,
        licence="CC BY-ND 4.0", citation=_ETT_CITATION, frequency="15min", split="ett_minute",
        n_rows=69680, description="Electricity transformer temperature, station 1, 15-minute.",
        source="https://github.com/zhouhaoyi/ETDataset",
    ),
    "ETTm2": _ltsf(
        "ETTm2", "ett/ETTm2.csv", _ETT_BASE + "ETTm2.csv", None,
        licence="CC BY-ND 4.0", citation=_ETT_CITATION, frequency="15min", split="ett_minute",
        n_rows=69680, description="Electricity transformer temperature, station 2, 15-minute.",
        source="https://github.com/zhouhaoyi/ETDataset",
    ),
    "Weather": _ltsf(
        "Weather", "weather/weather.csv", _TSLIB_BASE + "weather/weather.csv", None,
        licence="public (Max Planck Institute for Biogeochemistry, Jena; research use)",
        citation=_AUTOFORMER_CITATION, frequency="10min", split="ratio", n_rows=52696,
        description="21 meteorological indicators, 10-minute, 2020.",
        source="https://www.bgc-jena.mpg.de/wetter/",
    ),
    "Electricity": _ltsf(
        "Electricity", "electricity/electricity.csv", _TSLIB_BASE + "electricity/electricity.csv",
        None, licence="CC BY 4.0 (UCI ElectricityLoadDiagrams20112014)",
        citation=_AUTOFORMER_CITATION, frequency="h", split="ratio", n_rows=26304,
        description="Hourly consumption of 321 clients.",
        source="https://archive.ics.uci.edu/dataset/321",
    ),
    "Traffic": _ltsf(
        "Traffic", "traffic/traffic.csv", _TSLIB_BASE + "traffic/traffic.csv", None,
        licence="public (California Department of Transportation PeMS)",
        citation=_AUTOFORMER_CITATION, frequency="h", split="ratio", n_rows=17544,
        description="Hourly road occupancy rates of 862 sensors, San Francisco Bay Area.",
        source="https://pems.dot.ca.gov/",
    ),
    "Exchange": _ltsf(
        "Exchange", "exchange_rate/exchange_rate.csv",
        _TSLIB_BASE + "exchange_rate/exchange_rate.csv",
        "d55e7aa2641009814a18ba3279431b13f6d413b0eab195b9ff21988d8cf94e97",
        licence="research use (Lai et al. 2018 collection)", citation=_AUTOFORMER_CITATION,
        frequency="D", split="ratio", n_rows=7588,
        description="Daily exchange rates of 8 countries, 1990-01-01 to 2010-10-10.",
        source="https://github.com/laiguokun/multivariate-time-series-data",
    ),
    "ILI": _ltsf(
        "ILI", "illness/national_illness.csv", _TSLIB_BASE + "illness/national_illness.csv",
        "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",
        licence="public (US CDC ILINet)", citation=_AUTOFORMER_CITATION, frequency="7D",
        split="ratio", lookback=36, horizons=(24, 36, 48, 60), n_rows=966,
        description="Weekly influenza-like illness ratios, US CDC, 2002-2020.",
        source="https://gis.cdc.gov/grasp/fluview/fluportaldashboard.html",
    ),
    "TEP": DatasetInfo(
        name="TEP",
        files=(),
        licence="Apache-2.0 (as shipped in the bibmon package); original data by Braatz et al.",
        citation=(
            "Downs & Vogel, A plant-wide industrial process control problem, Comput. Chem. Eng. "
            "1993; data: Chiang, Russell & Braatz, Fault Detection and Diagnosis in Industrial "
            "Systems, Springer 2001."
        ),
        frequency="3min",
        lookback=10,
        horizons=(),
        split="tep",
        date_column=None,
        description="Tennessee Eastman process, Braatz data set: 22 runs of 52 variables.",
        source="bibmon package (bibmon/tennessee_eastman), https://github.com/petrobras/bibmon",
    ),
}


def list_datasets() -> list[str]:
    """Names of every registered dataset, in registry order."""
    return list(DATASETS)


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry of ``name`` (case-insensitive); a clear error for an unknown name."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    for key, info in DATASETS.items():
        if key.lower() == name.lower():
            return info
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
