"""System programs and permissions some tests need (Chromium, a PostgreSQL server, mounting a tmpfs).

Where one is missing the test skips with a reason that names what to install, so that the README's test command
passes on a machine with nothing but Python; with SEG_REQUIRE_SYSTEM=1 (set by .ci/run) it fails instead, so that
CI cannot pass by skipping. `python -m tests.system` prints the Debian packages that are missing (.ci/run installs
them), from the same search as the tests.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE = "SEG_REQUIRE_SYSTEM"
POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's <version>/bin folders; several versions may be installed
POSTGRES_PROGRAMS = ("initdb", "pg_ctl", "postgres")
CHROMIUM_NAMES = ("chromium", "chromium-browser")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it where SEG_REQUIRE_SYSTEM is set (to anything but empty or 0)."""
    if os.environ.get(REQUIRE, "") not in ("", "0"):
        pytest.fail(f"{reason} [{REQUIRE} is set: nothing may skip]", pytrace=False)
    pytest.skip(reason)


def find_chromium() -> Path | None:
    found = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    return Path(found) if found else None


def find_postgres_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: the newest /usr/lib/postgresql/<version>/bin, else the
    (symlink-resolved) folder of pg_ctl on PATH."""
    folders = sorted(POSTGRES_ROOT.glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        folders.append(Path(on_path).resolve().parent)
    return next((f for f in folders if all(_is_program(f / name) for name in POSTGRES_PROGRAMS)), None)


def chromium() -> Path:
    return find_chromium() or unavailable("needs Chromium (headless) on PATH: apt-get install chromium")


def postgres_bin() -> Path:
    return find_postgres_bin() or unavailable(
        f"needs a PostgreSQL server ({', '.join(POSTGRES_PROGRAMS)} in {POSTGRES_ROOT}/<version>/bin or on PATH): "
        "apt-get install postgresql")


def missing_packages() -> list[str]:
    """The Debian packages whose programs the tests would not find here."""
    return [package for package, found in (("chromium", find_chromium), ("postgresql", find_postgres_bin))
            if found() is None]


def _version(name: str) -> tuple[int, ...]:
    """'16' -> (16,), '9.6' -> (9, 6); a folder that is not a version sorts last."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _is_program(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


if __name__ == "__main__":
    print(" ".join(missing_packages()))
