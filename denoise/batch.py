"""Batch denoising of a folder: walk, skip what is done, one result line per file, a truthful summary.

Guarantees: inputs are never modified; each output is written to a temp file and renamed, so an
interrupted run leaves only complete results and simply resumes; a bad file costs one line, never
the batch; the exit status is 0 only when nothing failed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from denoise.audio import AudioError, is_audio_path

EXIT_OK = 0
EXIT_FAILURES = 1  # some files failed; the others were written
EXIT_SETUP = 2  # nothing could run: weights unavailable, output not writable, bad options


class Status(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class FileResult:
    """What happened to one input file."""

    source: Path
    target: Path
    status: Status
    reason: str = ""  # failure reason or skip reason, one line
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # audio duration processed
    elapsed: float = 0.0  # wall-clock time spent


@dataclass
class BatchSummary:
    results: list[FileResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.count(Status.FAILED) else EXIT_OK

    def lines(self) -> list[str]:
        done, skipped, failed = (self.count(s) for s in Status)
        audio = sum(r.seconds for r in self.results if r.status is Status.DONE)
        wall = sum(r.elapsed for r in self.results if r.status is Status.DONE)
        speed = f", {audio / wall:.1f}x real time" if wall > 0 else ""
        out = [f"done {done}, skipped {skipped}, failed {failed} ({audio:.1f} s of audio{speed})"]
        out += [f"  FAILED {r.source}: {r.reason}" for r in self.results if r.status is Status.FAILED]
        return out


class SetupError(RuntimeError):
    """The batch cannot start (nothing has been written). Exit status 2."""


def find_inputs(input_dir: Path, exclude: Path | None = None) -> list[Path]:
    """Audio files below ``input_dir`` (recursively, sorted), leaving out ``exclude`` if it is inside."""
    files = []
    for root, dirs, names in os.walk(input_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and root_path / d != exclude)
        files += [root_path / n for n in sorted(names) if is_audio_path(root_path / n)]
    return files


def plan_target(source: Path, input_dir: Path, output_dir: Path, suffix: str | None) -> Path:
    """The output path mirroring ``source``'s place below ``input_dir``."""
    rel = source.relative_to(input_dir)
    return output_dir / (rel.with_suffix(suffix) if suffix else rel)


def check_folders(input_dir: Path, output_dir: Path) -> None:
    """Refuse folders that would lose data or fail late: raise :class:`SetupError` before any work."""
    if not input_dir.is_dir():
        raise SetupError(f"input folder {input_dir} does not exist")
    if output_dir.resolve() == input_dir.resolve():
        raise SetupError("output folder is the input folder: results would replace your recordings")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=output_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise SetupError(f"output folder {output_dir} is not writable: {err.strerror or err}") from err


def run_batch(
    input_dir: Path,
    output_dir: Path,
    make_denoiser: Callable[[], object],
    *,
    overwrite: bool = False,
    suffix: str | None = None,
    subtype: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Denoise every audio file below ``input_dir`` into ``output_dir``.

    ``make_denoiser`` is called once, and only if there is work to do (so an empty folder never loads
    weights); exceptions it raises propagate (the caller turns them into exit status 2).
    """
    from tqdm.auto import tqdm

    input_dir, output_dir = Path(input_dir), Path(output_dir)
    check_folders(input_dir, output_dir)
    say = echo or (lambda line: tqdm.write(line, file=sys.stderr))
    summary = BatchSummary()
    todo: list[tuple[Path, Path]] = []
    for source in find_inputs(input_dir, exclude=output_dir.resolve()):
        target = plan_target(source, input_dir, output_dir, suffix)
        if target.exists() and not overwrite:
            summary.results.append(FileResult(source, target, Status.SKIPPED, "output exists"))
        else:
            todo.append((source, target))
    if not todo:
        return summary
    denoiser = make_denoiser()
    bar = tqdm(todo, unit="file", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for source, target in bar:
        bar.set_postfix_str(source.name[-40:])
        result = process_one(denoiser, source, target, subtype)
        summary.results.append(result)
        say(format_result(result, input_dir))
    bar.close()
    return summary


def process_one(denoiser: object, source: Path, target: Path, subtype: str | None) -> FileResult:
    """Denoise one file; every failure becomes a :class:`FileResult` with a one-line reason."""
    start = time.perf_counter()
    try:
        enhanced = denoiser.enhance_file(source, target, subtype=subtype)  # type: ignore[attr-defined]
    except AudioError as err:
        return FileResult(source, target, Status.FAILED, str(err))
    except MemoryError:
        return FileResult(source, target, Status.FAILED, "out of memory: try a smaller --chunk-seconds")
    except Exception as err:  # one file must never take the batch down; say what it was
        return FileResult(source, target, Status.FAILED, f"{type(err).__name__}: {err}".splitlines()[0])
    seconds = enhanced.samples.shape[-1] / enhanced.sample_rate
    return FileResult(
        source,
        target,
        Status.DONE,
        notes=enhanced.notes,
        seconds=seconds,
        elapsed=time.perf_counter() - start,
    )


def format_result(result: FileResult, base: Path) -> str:
    """One line per file, e.g. ``✓ talk.wav (12.0 s) -> output/talk.wav``."""
    try:
        name = str(result.source.relative_to(base))
    except ValueError:
        name = str(result.source)
    if result.status is Status.FAILED:
        return f"✗ {name}: {result.reason}"
    if result.status is Status.SKIPPED:
        return f"- {name}: skipped ({result.reason}; --overwrite to redo)"
    extra = f" [{'; '.join(result.notes)}]" if result.notes else ""
    return f"✓ {name} ({result.seconds:.1f} s) -> {result.target}{extra}"


def print_summary(summary: BatchSummary) -> None:
    """The closing lines of a batch, on stderr (stdout stays free for machine-readable output)."""
    for line in summary.lines():
        print(line, file=sys.stderr)
