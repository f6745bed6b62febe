"""The operator service: a saved monitor behind HTTP, with a live page and a durable history.

``mola-ts serve MODEL_FILE`` (needs the ``serve`` extra: FastAPI and uvicorn) serves a saved
monitor's stream: samples are posted as JSON or CSV, each row's statistics and alarm come back
and are pushed as server-sent events to the page at ``/`` (live control chart, alarm banner
with acknowledgement, the variables behind the last alarm). Rows, alarms and the stream's state
are committed to SQLite per batch, so a killed service resumes exactly. ``mola-ts replay``
posts a recorded or simulated run to it.

- :mod:`.store`: the SQLite history and the exact stream-state codec;
- :mod:`.inputs`: request bodies into checked rows (clear 4xx errors);
- :mod:`.service`: accepting samples (order, retries, conflicts), events, explanations;
- :mod:`.auth`: the access token and the rate limit;
- :mod:`.app`: the FastAPI application and the page;
- :mod:`.replay`: the replay client; :mod:`.commands`: the command-line entry points;
- :mod:`.loadbench`: the load benchmark (``mola-ts bench serve``).

Importing this package imports neither FastAPI nor torch.
"""

__all__: list[str] = []
