"""``make bench``: what a task costs on this stack, from a raw broker round trip to the HTTP API.

    uv run --frozen python -m tests.benchmarks [--smoke] [--out DIR] [--no-docs]

Every module of the package can be imported on its own: ``app/`` (Django project, embedded servers)
joins the import path here.
"""

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[2] / "app")
if _APP not in sys.path:
    sys.path.insert(0, _APP)
