"""Benchmark and demo runners behind ``mola-ts bench ...`` and ``mola-ts demo ...``.

Each runner module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code);
the CLI lists them here and imports a module only when its command is used.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS", "DEMOS"]

# command name -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "adapt": ("mola_ts.bench.adapt",
              "residual monitor moved from mode 1 to modes 2..6 of simulated TEP: adapted vs "
              "unchanged, retrained, PCA/DPCA refitted"),
    "fault-probability": ("mola_ts.bench.fault_probability",
                          "residual monitor's fault probability on simulated TEP: reliability "
                          "table and ECE of the Laplace mixture and tail-model methods"),
    "kernels": ("mola_ts.bench.kernels",
                "fused LoRA-MoE kernels vs reference: GPU time and memory, or CPU correctness"),
    "forecast": ("mola_ts.bench.forecast",
                 "long-term forecasting benchmark: MoLA vs direct iTransformer and baselines"),
    "lora": ("mola_ts.bench.lora",
             "LoRA-MoE layer: vectorised reference vs naive expert loop vs plain LoRA"),
    "monitor": ("mola_ts.bench.monitor",
                "monitors' scoring speed on TEP: batch samples per CPU-second, stream latency"),
    "plant": ("mola_ts.bench.plant",
              "monitors on simulated TEP data: FAR on >= 50k normal samples, the simulator's "
              "28 disturbances"),
    # the operator service's load benchmark lives beside the service (mola_ts.serve)
    "serve": ("mola_ts.serve.loadbench",
              "the monitoring service on loopback: samples/s, single-row latency, memory, "
              "kill -9 during a replay"),
    "uncertainty": ("mola_ts.bench.uncertainty",
                    "probabilistic forecasts: MAP, deep ensemble, Laplace, Laplace mixture"),
}
DEMOS: dict[str, tuple[str, str]] = {
    "tep": ("mola_ts.bench.tep_demo",
            "Tennessee Eastman fault detection: residual, MOLA, PCA, DPCA, bibmon's PCA"),
}
