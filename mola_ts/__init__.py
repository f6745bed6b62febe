"""mola_ts: MoLA forecasting, MOLA process monitoring and shared LoRA-MoE layers."""

__version__ = "0.1.0"

__all__ = ["__version__"]
