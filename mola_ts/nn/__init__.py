"""Shared torch building blocks: the LoRA-MoE layer, its routers and allocation plans.

This package knows nothing of forecasting or monitoring; it imports nothing of the toolkit
except :mod:`mola_ts.nn.kernels` (the gated wide-LoRA delta).
"""

from .allocation import (
    MOLA_PRESETS,
    AllocationPlan,
    LayerAllocation,
    hilo_plan,
    layer_groups,
    mola_plan,
    uniform_plan,
)
from .lora import (
    AuxReport,
    LoRAMoE,
    LoRAMoEConfig,
    ParameterReport,
    collect_aux,
    find_targets,
    inject,
    lora_layers,
    merge_adapters,
    parameter_report,
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
    "hilo_plan",
    "layer_groups",
    "mola_plan",
    "uniform_plan",
    "AuxReport",
    "LoRAMoE",
    "LoRAMoEConfig",
    "ParameterReport",
    "collect_aux",
    "find_targets",
    "inject",
    "lora_layers",
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
