"""Backend Arena core. The folders are its jobs:

- ``core.py`` (the `Arena` every front end calls), ``types.py`` (requests and results), ``registry.py`` (the
  line per backend), ``errors.py``;
- ``running/``: worker processes, the backend host inside them, CPU and memory budgets, the machine's facts,
  start-up warm-up;
- ``preparing/``: the model catalog, model resolution and shared inputs, the artifact cache, the embedded image
  model's scenes, the server-made broken exports;
- ``judging/``: verdicts, image similarity, the headless check;
- ``public/``: the public border (the request gate and its limits, the server's secrets, Hub repositories read as
  data);
- ``sharing/``: run history, reports and settings links.

Importing this package never imports torch, transformers or onnxruntime: those live in worker processes.
"""

import os as _os

# huggingface_hub 2.x reports usage to the Hub on a process's first call (GET /api/agent-harnesses) unless told not
# to: the arena's processes (the app, its workers, the CLI) make no request a user did not ask for. A user's own
# setting wins.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
