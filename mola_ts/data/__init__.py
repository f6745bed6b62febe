"""Datasets, the registry, protocols (splits, scaling, windows) and input validation."""

from .crossfit import CrossFitFold, Segment, time_block_folds
from .fetch import (
    DATA_HOME_ENV,
    DataIntegrityError,
    DataNotFoundError,
    fetch_file,
    file_sha256,
    get_data_home,
    verify_dataset,
)
from .formats import to_long, to_wide
from .loaders import (
    fetch_electricity,
    fetch_ett,
    fetch_exchange,
    fetch_ili,
    fetch_traffic,
    fetch_weather,
    load_dataset,
)
from .protocol import (
    LTSFSplit,
    WindowDataset,
    ltsf_borders,
    ltsf_split,
    n_windows,
    sliding_windows,
)
from .registry import DATASETS, DatasetInfo, RemoteFile, get_dataset_info, list_datasets
from .simulate import (
    SETTLE_HOURS,
    TEP_SIM_DISTURBANCES,
    TEP_SIM_MODES,
    PlantShutdownError,
    SimulatorMissingError,
    settling_time,
    simulate_tep,
)
from .tep import (
    DETECTABLE_FAULTS,
    FAULT_ONSET,
    TEP_COLUMNS,
    TEP_DESCRIPTIONS,
    TEP_FAULTS,
    TEP_XMEAS,
    TEP_XMV,
    UNDETECTABLE_FAULTS,
    load_tep,
    tep_fault_mask,
)
from .validation import (
    ValidatedSeries,
    check_columns_match,
    check_number,
    check_series,
    future_index,
)

__all__ = [
    "simulate_tep", "settling_time", "PlantShutdownError", "SimulatorMissingError",
    "TEP_SIM_MODES", "TEP_SIM_DISTURBANCES", "SETTLE_HOURS",
    "DATA_HOME_ENV", "DataIntegrityError", "DataNotFoundError", "fetch_file", "file_sha256",
    "get_data_home", "verify_dataset", "to_long", "to_wide", "fetch_electricity", "fetch_ett",
    "fetch_exchange", "fetch_ili", "fetch_traffic", "fetch_weather", "load_dataset", "LTSFSplit",
    "WindowDataset", "ltsf_borders", "ltsf_split", "n_windows", "sliding_windows", "DATASETS",
    "DatasetInfo", "RemoteFile", "get_dataset_info", "list_datasets", "DETECTABLE_FAULTS",
    "FAULT_ONSET", "TEP_COLUMNS", "TEP_DESCRIPTIONS", "TEP_FAULTS", "TEP_XMEAS", "TEP_XMV",
    "UNDETECTABLE_FAULTS", "load_tep", "tep_fault_mask", "ValidatedSeries",
    "check_columns_match", "check_series", "check_number", "future_index", "CrossFitFold",
    "Segment", "time_block_folds",
]
