"""Collection settings for the docstring examples of ``mola_ts`` (run with the tests)."""

import importlib.util

# the Triton kernels module imports triton (the `gpu` and `dev` extras); without it the
# package runs the PyTorch reference path and that module has no example to run
collect_ignore = [] if importlib.util.find_spec("triton") else [
    "mola_ts/nn/kernels/triton_fused.py"]
# the service modules import FastAPI (the `serve` and `dev` extras)
if not importlib.util.find_spec("fastapi"):
    collect_ignore += ["mola_ts/serve/app.py"]
