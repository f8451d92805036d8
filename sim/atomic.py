"""Atomic file and folder writes: a crash never leaves a half-written result in place.

A results folder is built under a hidden staging name beside its target,
``.tmp-<name>-p<pid>-<random>``, and renamed into place in one step. The staging folder
also holds an owner file (host and pid). A run killed outright (SIGKILL, power loss)
cannot remove its staging folder, so the next run writing into the same parent folder
removes every staging folder whose owner process is gone (:func:`remove_stale_staging`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

STAGING_PREFIX = ".tmp-"
OWNER_FILE = ".moska-owner.json"
_STAGING_RE = re.compile(r"^\.tmp-.*-p(\d+)-[A-Za-z0-9_]+$")
_NAME_CHARS = 80  # of the target's name kept in the staging name (stays under NAME_MAX)


class TargetExistsError(ValueError):
    """The target folder appeared (another run wrote it) while this one was working."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:_NAME_CHARS]}.", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True


def staging_owner(folder: Path) -> tuple[str | None, int] | None:
    """(host, pid) of the run that owns staging folder ``folder``; None if not one.

    The owner file names the host; a folder killed before writing it has only the pid in
    its name, and is taken to be this host's.
    """
    match = _STAGING_RE.match(folder.name)
    if match is None:
        return None
    pid, host = int(match.group(1)), None
    with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
        owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
        host, pid = str(owner["host"]), int(owner["pid"])
    return host, pid


def live_staging(parent: Path, name: str) -> list[tuple[Path, int]]:
    """Staging folders in ``parent`` for a target called ``name`` whose owner still runs."""
    found: list[tuple[Path, int]] = []
    prefix = f"{STAGING_PREFIX}{name[:_NAME_CHARS]}-p"
    with contextlib.suppress(OSError):
        for entry in Path(parent).iterdir():
            if entry.name.startswith(prefix) and (owner := staging_owner(entry)):
                host, pid = owner
                if host in (None, socket.gethostname()) and pid_alive(pid) and pid != os.getpid():
                    found.append((entry, pid))
    return found


def remove_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` left by runs that are gone; returns them.

    Only folders named like this module's staging folders are touched, only those whose
    owner is on this host, and only when that process no longer exists.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        owner = staging_owner(entry) if entry.name.startswith(STAGING_PREFIX) else None
        if owner is None or owner[0] not in (None, host) or pid_alive(owner[1]):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                removed.append(entry)
    return removed


@contextlib.contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Build a results folder under a temporary name beside ``target`` (yielded) and rename
    it into place when the block ends cleanly; on any error, signal included, remove it, so
    a folder with the final name is always complete. ``target`` must be absent or an empty
    folder; stale staging folders of killed runs in the same parent are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent)
    prefix = f"{STAGING_PREFIX}{target.name[:_NAME_CHARS]}-p{os.getpid()}-"
    tmp = target.parent / f"{prefix}{secrets.token_hex(4)}"
    try:
        # the name is known before the folder exists, so a signal at any moment from here
        # on finds it in the clean-up below (tempfile.mkdtemp would leave a window)
        while True:
            try:
                os.mkdir(tmp, 0o700)
                break
            except FileExistsError:
                tmp = target.parent / f"{prefix}{secrets.token_hex(4)}"
        (tmp / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(),
                                                  "pid": os.getpid()}), encoding="utf-8")
        yield tmp
        (tmp / OWNER_FILE).unlink(missing_ok=True)
        os.chmod(tmp, 0o755)
        if target.exists() or target.is_symlink():
            if not target.is_dir() or any(target.iterdir()):
                raise TargetExistsError(f"{target}: appeared while this run was working (another "
                                        "run wrote it?); expected it absent or empty")
            target.rmdir()
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise TargetExistsError(f"{target}: appeared while this run was working "
                                        "(another run wrote it?)") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = [
    "OWNER_FILE",
    "STAGING_PREFIX",
    "TargetExistsError",
    "atomic_write_bytes",
    "atomic_write_text",
    "live_staging",
    "pid_alive",
    "remove_stale_staging",
    "staged_folder",
    "staging_owner",
]
