#!/usr/bin/env python
"""The README's screenshots, from a running `make up` stack: Flower's workers and tasks pages and the
development landing page, taken with headless Chromium (Debian: `apt-get install chromium`).

    make up                 # terminal 1
    make test-celery        # terminal 2: tasks for Flower to show
    make screenshots        # = uv run --frozen python docs/images/take_screenshots.py

Starts nothing: the URLs and the Flower login come from the stack's .local/stack.env ($LOCAL_STACK_DIR).
Refuses to take a picture of an empty Flower (a pool's worker missing, or no task yet). Not part of
`make test`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

IMAGES = Path(__file__).resolve().parent
sys.path.insert(0, str(IMAGES.parent.parent / "app"))

from apps.main.queues import WORKER_POOLS  # noqa: E402  (app/ on the path first)
from embedded import stack_env  # noqa: E402
from portfolio_site import environment as env_names  # noqa: E402

#: file name -> (which URL of stack.env, path below it, window size)
SHOTS = {
    "flower-workers.png": (env_names.FLOWER_URL, "", (1600, 700)),
    "flower-tasks.png": (env_names.FLOWER_URL, "tasks", (1600, 900)),
    "landing-page.png": (env_names.WEB_URL, "", (1100, 1140)),
}


class NotReady(Exception):
    """The stack cannot give a picture worth taking; the message says what to do."""


def flower_api(flower_url: str, login: str, path: str) -> object:
    request = urllib.request.Request(flower_url + path,
                                     headers={"Authorization": "Basic " + base64.b64encode(login.encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def check_flower(flower_url: str, login: str) -> None:
    """Every pool's worker known to Flower, and at least one task: else the pictures would show nothing."""
    workers = flower_api(flower_url, login, "api/workers")
    missing = sorted(set(WORKER_POOLS) - {node.split("@")[0] for node in workers})
    if missing:
        raise NotReady(f"Flower does not list the worker(s) of {', '.join(missing)} yet; wait a moment")
    if not flower_api(flower_url, login, "api/tasks?limit=1"):
        raise NotReady("Flower has seen no task yet: run `make test-celery` first")


def with_login(url: str, login: str) -> str:
    """Chromium sends a URL's user:password as basic auth, for the page and its requests to the same origin."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{login}@{parts.netloc}"))


def screenshot(chromium: str, url: str, out: Path, size: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory(prefix="screenshots-") as profile:
        argv = [
            chromium, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
            # Flower fills its tables from its API after the page loads: let those requests finish.
            "--virtual-time-budget=8000", f"--screenshot={out}", url,
        ]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode or not out.exists():
        raise RuntimeError(f"chromium failed on {url}: {done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="Directory of the PNGs (default docs/images).")
    args = parser.parse_args(argv)

    shared = stack_env.read()
    if not shared.get(env_names.FLOWER_URL) or stack_env.no_stack_reason():
        print(stack_env.NO_STACK, file=sys.stderr)
        return stack_env.NO_STACK_EXIT
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("headless Chromium is needed: apt-get install chromium", file=sys.stderr)
        return 2
    login = shared[env_names.FLOWER_BASIC_AUTH].split(",")[0]
    try:
        check_flower(shared[env_names.FLOWER_URL], login)
    except NotReady as exc:
        print(exc, file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (url_key, path, size) in SHOTS.items():
        url = shared[url_key] + path
        if url_key == env_names.FLOWER_URL:
            url = with_login(url, login)
        screenshot(chromium, url, args.out / name, size)
        print(f"wrote {args.out / name} ({shared[url_key] + path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
