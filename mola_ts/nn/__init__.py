"""Shared torch building blocks: the LoRA-MoE layer, its routers and allocation plans.

This package knows nothing of forecasting or monitoring and imports nothing of the toolkit.
Its modules, each importing only those above it:

- :mod:`~mola_ts.nn.kernels`: the gated wide-LoRA delta (PyTorch reference, fused Triton).
- :mod:`~mola_ts.nn.routers`: task, softmax, top-k and LD-MoLE routers and their losses.
- :mod:`~mola_ts.nn.config`: adapter configs, presets and allocation plans (plain data).
- :mod:`~mola_ts.nn.layer`: the one LoRA-MoE layer class and its :class:`Route` input.
- :mod:`~mola_ts.nn.model`: inject / route / collect losses / merge / remove over a model.
- :mod:`~mola_ts.nn.allocation`: plan search (HILO groups, MoLA presets, GuiLoMo).
- :mod:`~mola_ts.nn.transformer`: encoder blocks of plain ``nn.Linear`` layers to wrap.
"""

from .allocation import (
    SearchResult,
    bilevel_gradient,
    gsv_layers,
    guilomo_plan,
    guilomo_search,
    hilo_plan,
    layer_groups,
    mola_plan,
    rebuild,
    uniform_plan,
)
from .config import MOLA_PRESETS, AllocationPlan, LayerAllocation, LoRAMoEConfig
from .layer import LoRAMoE, Route
from .model import (
    AuxReport,
    ParameterReport,
    collect_aux,
    find_targets,
    inject,
    lora_layers,
    merge_adapters,
    parameter_report,
    pin_task_gates,
    remove_adapters,
    routing,
    unmerge_adapters,
)
from .routers import (
    ROUTERS,
    LambdaMLP,
    LDMoLERouter,
    Router,
    RouterOutput,
    SoftmaxRouter,
    TaskRouter,
    TopKRouter,
    load_balance_loss,
    sparsegen,
    sparsegen_support,
    sparsity_lower_bound,
)

__all__ = [
    "MOLA_PRESETS",
    "AllocationPlan",
    "LayerAllocation",
    "LoRAMoEConfig",
    "SearchResult",
    "bilevel_gradient",
    "guilomo_plan",
    "guilomo_search",
    "gsv_layers",
    "hilo_plan",
    "layer_groups",
    "mola_plan",
    "rebuild",
    "uniform_plan",
    "LoRAMoE",
    "Route",
    "AuxReport",
    "ParameterReport",
    "collect_aux",
    "find_targets",
    "inject",
    "lora_layers",
    "pin_task_gates",
    "merge_adapters",
    "parameter_report",
    "remove_adapters",
    "routing",
    "unmerge_adapters",
    "ROUTERS",
    "LambdaMLP",
    "LDMoLERouter",
    "Router",
    "RouterOutput",
    "SoftmaxRouter",
    "TaskRouter",
    "TopKRouter",
    "load_balance_loss",
    "sparsegen",
    "sparsegen_support",
    "sparsity_lower_bound",
]
