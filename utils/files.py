"""Writing results so that a crash never leaves a half-written file that looks complete.

Every write goes to a temporary name beside the target and is renamed over it only when complete; a failure
(full disk, read-only folder, ...) removes the temporary file and becomes a one-line UserError naming the path and
the operating system's reason.
"""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from utils.errors import UserError


def os_reason(error: OSError) -> str:
    """The operating system's words for a failed file operation ("No space left on device")."""
    return error.strerror or str(error)


def write_error(path: str | Path, error: OSError) -> UserError:
    return UserError(f"{path}: cannot write ({os_reason(error)})")


def temp_name(path: Path) -> Path:
    """`<name>.<pid>.tmp` beside the target: two processes writing the same file never share a temporary."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def remove_stale_temps(path: Path) -> None:
    """Temporary files of `path` left by killed processes (`<name>.<pid>.tmp` whose process is gone, and the
    `<name>.tmp` of older versions), so that a crash leaves no 20 MB `best.pt.tmp` behind for good."""
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.*tmp"):
        middle = tmp.name[len(path.name) + 1:-len("tmp")].rstrip(".")
        if (middle == "" or (middle.isdigit() and not _alive(int(middle)))) and tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an absurd number): leave its file alone
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any failure it is removed.
    An OSError (while writing or renaming) becomes a UserError naming `path` and the reason."""
    path = Path(path)
    remove_stale_temps(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_stale_temp_folders(out: Path) -> None:
    """`OUT.tmp-<pid>-<hex>` folders of atomic_folder writers whose process is gone (killed: a Ctrl-C removes its
    own), and the `OUT.tmp-<hex>` of older versions, which held no process id."""
    for tmp in out.parent.glob(f"{glob.escape(out.name)}.tmp-*"):
        parts = tmp.name[len(out.name) + len(".tmp-"):].split("-")
        old = len(parts) == 1 and len(parts[0]) == 8 and all(c in "0123456789abcdef" for c in parts[0])
        dead = len(parts) == 2 and parts[0].isdigit() and not _alive(int(parts[0]))
        if (old or dead) and tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty `OUT.tmp-XXXX` beside `out` (made with the umask's permissions, unlike tempfile.mkdtemp) to
    fill; on success it replaces `out`, which must be missing or empty, and on any failure it is removed, so an
    interrupted writer never leaves a complete-looking folder. A body that removes the folder commits nothing.
    The name holds the writer's process id, so that the folders of killed writers are removed by the next one."""
    remove_stale_temp_folders(out)
    while True:
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        if tmp.exists():
            if out.is_dir():
                out.rmdir()
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (see atomic_path)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def make_folder(path: str | Path) -> Path:
    """`mkdir -p` whose failure (a file in the way, a full or read-only disk) is one line naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{path}: exists and is not a folder") from None
    except OSError as e:
        raise UserError(f"{path}: cannot create the folder ({os_reason(e)})") from None
    return path


def check_output_folder(path: str | Path, flag: str = "--out") -> Path:
    """Before any work: the output folder, or the nearest of its parents that exists, must be a folder."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "exists and is not a folder" if existing == path else f"{existing} is a file, not a folder"
        raise UserError(f"{flag} {path}: {where}" if flag else f"{path}: {where}")
    return path


def check_output_file(path: str | Path, flag: str = "--out") -> Path:
    """Before any work: the output file's folder must exist and the path must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path}: is a folder, expected a file name")
    if not path.parent.is_dir():
        raise UserError(f"{flag} {path}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"{flag} {path}: the folder {path.parent} is not writable")
    return path


def check_new_folder(out: str | Path, flag: str = "--out") -> Path:
    """Before any work: a folder to create must be missing or empty (nothing of an earlier result is mixed in)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UserError(f"{flag} {out}: exists and is not a directory; give a new folder")
        if any(out.iterdir()):
            raise UserError(f"{flag} {out}: output folder exists and is not empty; give a new folder or remove it")
    return out
