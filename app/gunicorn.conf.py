"""gunicorn reads this from the working directory (/app): web metrics in multiprocess mode.

Clears the metric files of a previous container at start and marks dead workers' files, so the web
pods' counters are correct across gunicorn worker restarts.
"""

from apps.main.metrics.multiprocess import gunicorn_child_exit as child_exit
from apps.main.metrics.multiprocess import gunicorn_on_starting as on_starting

__all__ = ["child_exit", "on_starting"]
