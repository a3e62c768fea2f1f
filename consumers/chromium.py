"""Chromium: render an HTML file to a PNG screenshot with headless Chromium.

Looks for a Chromium binary (``$CHROMIUM``, then ``chromium``, ``chromium-browser``,
``google-chrome`` on ``PATH``); :func:`install_chromium` installs Debian's ``chromium``
package with apt-get when run as root. Each screenshot uses a fresh temporary profile
directory and no network features (no sync, no component updates, no QUIC).

Example::

    >>> chromium_command("/usr/bin/chromium", "/tmp/r.html", "/tmp/r.png", "/tmp/prof", (1280, 900))[:3]
    ['/usr/bin/chromium', '--headless', '--no-sandbox']
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class ChromiumError(RuntimeError):
    """Chromium is missing, could not be installed, or failed to render."""


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    explicit = os.environ.get("CHROMIUM")
    if explicit and Path(explicit).is_file():
        return explicit
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout_s: float = 600.0) -> str:
    """Install Debian's ``chromium`` with apt-get (root only); returns the binary's path."""
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ChromiumError("cannot install chromium: needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    ):
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ChromiumError(f"{' '.join(cmd)} timed out after {timeout_s:.0f}s") from exc
        if proc.returncode != 0:
            raise ChromiumError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    path = find_chromium()
    if path is None:
        raise ChromiumError("chromium installed but not found on PATH")
    return path


def ensure_chromium(install: bool = False) -> str:
    """A Chromium binary; installs it first if missing and ``install`` is true."""
    path = find_chromium()
    if path is not None:
        return path
    if not install:
        raise ChromiumError(
            "no Chromium found (set CHROMIUM=/path/to/chromium, or as root: "
            "apt-get update && apt-get install -y --no-install-recommends chromium)"
        )
    return install_chromium()


def chromium_command(
    binary: str, html: str | Path, out_png: str | Path, profile_dir: str | Path, window: tuple[int, int]
) -> list[str]:
    """The command line of one headless screenshot."""
    return [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        f"--screenshot={Path(out_png).resolve()}",
        f"--window-size={window[0]},{window[1]}",
        Path(html).resolve().as_uri(),
    ]


def screenshot(
    html: str | Path,
    out_png: str | Path,
    *,
    window: tuple[int, int] = (1280, 1600),
    binary: str | None = None,
    timeout_s: float = 90.0,
) -> Path:
    """Render ``html`` (a local file) to ``out_png``; raises :class:`ChromiumError` on failure."""
    binary = binary or ensure_chromium()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with tempfile.TemporaryDirectory(prefix="interest-stream-chromium-") as profile:
        cmd = chromium_command(binary, html, out, profile, window)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ChromiumError(f"chromium did not finish within {timeout_s:.0f}s") from exc
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        raise ChromiumError(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return out
