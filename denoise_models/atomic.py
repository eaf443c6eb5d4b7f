"""The one atomic writer: results appear whole or not at all, with the usual permissions.

Every file this project publishes (denoised audio, fetched or registered weights, checkpoints, ONNX
graphs, manifests) is written through :func:`atomic_output`: data goes to a temporary file beside the
destination, which is flushed to disk (``fsync``), given ``0666 & ~umask`` permissions (``mkstemp`` would
leave 0600), renamed over the destination, and the folder is synced so the rename survives a power cut.

Temporary names are short and fixed in form (``.denoise-tmp-<pid>-<random><suffix>``), so they fit
beside a 255-byte file name, and any run can recognise and remove the leftovers of a killed one
(:func:`remove_stale_temps`). It lives in the models package because the weights store uses it and
the models package never imports the application.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".denoise-tmp-"
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"(?P<pid>\d+)-[0-9a-f]{8}(?:\.[^.]*)?$")
# A temp file whose process still runs is in use, unless it is older than this (another machine's run
# on a shared folder cannot be asked whether it is alive).
STALE_AFTER_SECONDS = 24 * 3600


def usual_permissions() -> int:
    """``0666`` minus the process umask: what ``open()`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path_for(dest: Path) -> Path:
    """A fresh temporary name in ``dest``'s folder, keeping its (short) extension for format detection."""
    suffix = dest.suffix if 0 < len(dest.suffix.encode(errors="surrogateescape")) <= 16 else ""
    return dest.with_name(f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(dest: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on a clean exit it becomes ``dest``, on an exception it vanishes.

    The caller writes the temporary path by any means (``open``, ``soundfile``, ``torch.save``) and may
    verify it before the ``with`` block ends. ``durable`` syncs the file and its folder (on by default:
    without it a power cut can leave an empty "done" file under the final name).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {dest.name}")
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, usual_permissions())
        os.replace(tmp, dest)
        if durable:
            fsync_dir(dest.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_bytes(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` through :func:`atomic_output`; returns ``dest``."""
    dest = Path(dest)
    with atomic_output(dest) as tmp:
        tmp.write_bytes(data)
    return dest


def is_temp_name(name: str) -> bool:
    """True for a name :func:`temp_path_for` makes."""
    return bool(_TEMP_NAME.match(name))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """Delete temporary files left in ``folder`` by killed runs; returns what was removed.

    A temp file is stale when the process that made it no longer runs (same machine) or it is older than
    :data:`STALE_AFTER_SECONDS`. Files of a run that is still writing are left alone.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    candidates = folder.rglob(f"{TEMP_PREFIX}*") if recursive else folder.glob(f"{TEMP_PREFIX}*")
    now = time.time()
    for path in candidates:
        match = _TEMP_NAME.match(path.name)
        if not match or not path.is_file() or path.is_symlink():
            continue
        try:
            old = now - path.stat().st_mtime > STALE_AFTER_SECONDS
        except OSError:
            continue
        if old or not _pid_alive(int(match["pid"])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed
