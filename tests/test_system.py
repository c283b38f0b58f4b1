"""tests/system.py: a missing system program skips with the package to install, or fails under SEG_REQUIRE_SYSTEM;
PostgreSQL is found whatever its version, the newest first."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import system
from tests.conftest import ROOT


def program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """A machine with nothing installed: an empty PATH and no Debian PostgreSQL folder."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(system, "POSTGRES_ROOT", tmp_path / "usr-lib-postgresql")
    monkeypatch.delenv(system.REQUIRE, raising=False)
    return tmp_path


@pytest.mark.parametrize("value", [None, "", "0"])
def test_missing_program_skips_naming_the_package(bare, monkeypatch, value):
    if value is not None:
        monkeypatch.setenv(system.REQUIRE, value)
    with pytest.raises(pytest.skip.Exception, match=r"^needs Chromium .*: apt-get install chromium$"):
        system.chromium()
    with pytest.raises(pytest.skip.Exception, match=r"^needs a PostgreSQL server .*: apt-get install postgresql$"):
        system.postgres_bin()
    assert system.missing_packages() == ["chromium", "postgresql"]


def test_missing_program_fails_where_required(bare, monkeypatch):
    monkeypatch.setenv(system.REQUIRE, "1")
    for find, package in ((system.chromium, "chromium"), (system.postgres_bin, "postgresql")):
        with pytest.raises(pytest.fail.Exception, match=rf"apt-get install {package} \[SEG_REQUIRE_SYSTEM is set"):
            find()


def test_postgres_newest_complete_version_first(bare):
    for version in ("9.6", "15", "16", "17"):
        for name in ("initdb", "pg_ctl", "postgres") if version != "17" else ("pg_ctl",):  # 17: client only
            program(bare / "usr-lib-postgresql" / version / "bin", name)
    (bare / "usr-lib-postgresql" / "16" / "bin" / "initdb").chmod(0o644)  # not executable: incomplete
    assert system.postgres_bin() == bare / "usr-lib-postgresql" / "15" / "bin"


def test_programs_on_path(bare):
    """A PostgreSQL outside Debian's folders (pg_ctl on PATH, a symlink to its bin folder), Chromium by either name."""
    server = bare / "opt" / "pgsql" / "bin"
    for name in ("initdb", "pg_ctl", "postgres"):
        program(server, name)
    (bare / "bin").mkdir()
    (bare / "bin" / "pg_ctl").symlink_to(server / "pg_ctl")
    browser = program(bare / "bin", "chromium-browser")
    assert system.postgres_bin() == server and system.chromium() == browser
    assert system.missing_packages() == []


def test_module_prints_the_missing_packages(tmp_path, monkeypatch):
    """What .ci/run installs: the same search, as Debian package names (PostgreSQL: as this machine has it)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    out = subprocess.run([sys.executable, "-m", "tests.system"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ), check=True).stdout
    assert out.split() == system.missing_packages() and out.split()[0] == "chromium"
