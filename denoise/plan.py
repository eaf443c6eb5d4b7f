"""Everything a batch decides before any work: folders checked, inputs gathered, output names planned.

No two inputs ever share an output.

Rules (README "What you can count on"):

* an output mirrors its input's place below the input folder; ``--format``/compat mode change only the
  extension;
* when several inputs would map to one output name (``talk.flac`` and ``talk.wav`` with ``--format
  wav``), the input that already has the output's extension keeps the plain name and every other one
  gets its own extension kept in the name: ``talk.flac`` -> ``talk.flac.wav``. If that still collides
  (an input really named ``talk.flac.wav``), the batch is refused before anything is written;
* an output name longer than the file system allows (255 bytes) fails that input with one line; a
  folder standing where an output file should go fails that input with one line.
"""

from __future__ import annotations

import contextlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from denoise.audio import AudioError, container_for
from denoise.manifest import read_input_list
from denoise.walk import walk_inputs

DEFAULT_NAME_MAX = 255
INPUT_LIST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet")


class SetupError(RuntimeError):
    """The batch cannot start (nothing has been written). Exit status 2."""


@dataclass
class Plan:
    """``targets``: input -> output for inputs to process; ``problems``: input -> one-line failure reason."""

    targets: dict[Path, Path] = field(default_factory=dict)
    problems: dict[Path, tuple[Path, str]] = field(default_factory=dict)
    renamed: list[tuple[Path, Path]] = field(default_factory=list)  # collisions resolved, for --verbose


def printable(path: str | Path) -> str:
    """A path as one safe line: non-UTF-8 bytes as ``\\xNN``, newlines and other controls escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


def name_max(folder: Path) -> int:
    """The longest file name (bytes) ``folder``'s file system accepts."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def _natural(rel: Path, suffix: str | None) -> Path:
    return rel.with_suffix(suffix) if suffix else rel


def plan_outputs(sources: list[Path], base: Path, output_dir: Path, suffix: str | None) -> Plan:
    """Map every input to its own output below ``output_dir``; see the module rules."""
    rel_of = {s: s.relative_to(base) for s in sources}
    wanted: dict[Path, list[Path]] = defaultdict(list)
    for source, rel in rel_of.items():
        wanted[_natural(rel, suffix)].append(source)
    chosen: dict[Path, Path] = {}
    plan = Plan()
    for natural, group in wanted.items():
        keeper = [s for s in group if s.suffix.lower() == natural.suffix.lower()]
        for source in group:
            if len(group) == 1 or (len(keeper) == 1 and source == keeper[0]):
                rel = natural
            else:
                rel = natural.with_name(rel_of[source].name + natural.suffix)
                plan.renamed.append((source, output_dir / rel))
            if rel in chosen or (rel != natural and rel in wanted):
                other = chosen.get(rel) or wanted[rel][0]
                raise SetupError(
                    f"{printable(source)} and {printable(other)} would both be written to "
                    f"{printable(output_dir / rel)}; rename one of them"
                )
            chosen[rel] = source
    limit = name_max(output_dir)
    for rel, source in sorted(chosen.items(), key=lambda item: item[1]):
        target = output_dir / rel
        size = len(os.fsencode(target.name))
        try:
            container_for(target)
        except AudioError as err:
            plan.problems[source] = (target, f"{err} (use --format)")
            continue
        if size > limit:
            plan.problems[source] = (
                target,
                f"output name would be {size} bytes, over the {limit}-byte limit",
            )
        elif target.is_dir():
            plan.problems[source] = (target, f"a folder is in the way of the output {printable(target)}")
        else:
            plan.targets[source] = target
    return plan


def check_folders(input_path: Path, output_dir: Path) -> None:
    """Refuse folders that would lose data or fail late: raise :class:`SetupError` before any work."""
    if not input_path.exists():
        raise SetupError(f"input {printable(input_path)} does not exist")
    if output_dir.resolve() == input_path.resolve():
        raise SetupError("output folder is the input folder: results would replace your recordings")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(output_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise SetupError(
            f"output folder {printable(output_dir)} is not writable: {err.strerror or err}"
        ) from err


def gather_inputs(input_path: Path, output_dir: Path) -> tuple[list[Path], Path, list[tuple[Path, str]]]:
    """``(inputs, base folder outputs mirror, ignored)`` for a folder, a single file or an input list."""
    if input_path.is_file() and input_path.suffix.lower() in INPUT_LIST_SUFFIXES:
        try:
            files = [Path(os.path.abspath(p)) for p in read_input_list(input_path)]
        except (OSError, ValueError) as err:
            raise SetupError(f"cannot read the input list {printable(input_path)}: {err}") from err
        base = Path(os.path.commonpath([p.parent for p in files])) if files else input_path.parent
        return files, base, []
    walk = walk_inputs(input_path, exclude=[output_dir])
    base = input_path if input_path.is_dir() else input_path.parent
    return walk.files, base, walk.skipped


@contextlib.contextmanager
def output_lock(
    output_dir: Path, *, wait: bool = False, echo: Callable[[str], None] = print
) -> Iterator[None]:
    """Hold an advisory lock (``fcntl.flock``) on the output folder itself while a run writes to it.

    Locking the folder rather than a lock file leaves nothing behind (a run that fails to start writes
    nothing) and cannot race with a lock file's removal. Where folders cannot be locked (Windows, some
    network file systems) the run goes on unlocked.
    """
    try:
        import fcntl

        fd = os.open(output_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise SetupError(
                    f"another run is writing to {printable(output_dir)}; wait for it to finish or pass --wait"
                ) from None
            echo(f"waiting for the other run on {printable(output_dir)} to finish ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # this file system cannot lock folders: unlocked, as before
        yield
    finally:
        os.close(fd)  # releases the lock
