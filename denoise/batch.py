"""Batch denoising of a folder, a single file or an input list: one line per file, a truthful summary.

Guarantees (README "What you can count on"): inputs are never modified; output names are planned for
the whole batch before any work (:mod:`denoise.plan`); every result is written through
:class:`denoise.audio.AudioSink` (verified, synced, renamed), so an interrupted or killed run leaves
only complete results, and the next run removes the temp files a killed one left; every input gets
one row in the results manifest (:mod:`denoise.manifest`), which is what resume trusts; a bad file
costs one line, never the batch; Ctrl-C or SIGTERM ends the run with a summary (exit 130 / 143); the
exit status is 0 only when nothing failed; one run at a time per output folder (a lock on the folder).

With ``workers`` > 1 the files are denoised by worker processes (:mod:`denoise.workers`); everything
above still holds and stays here, in the one parent process: a worker that dies costs the file it was
computing one failed row, and the outputs are the same bytes as with one worker.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from denoise.audio import AudioError, check_output_format, required_subtype
from denoise.engine.batching import FilesTogether, files_in_flight, sort_by_length
from denoise.interrupts import Interrupted, interruptible, signals_deferred
from denoise.manifest import (
    MANIFEST_NAME,
    ManifestWriter,
    dnsmos_before_after,
    input_identity,
    path_text,
    plan_resume,
    read_manifest,
    settings_hash,
)
from denoise.plan import SetupError, check_folders, gather_inputs, output_lock, plan_outputs, printable
from denoise.workers import Lost, WorkerPool, resolve_workers
from denoise_models.atomic import remove_stale_temps

EXIT_OK = 0
EXIT_FAILURES = 1  # some files failed; the others were written
EXIT_SETUP = 2  # nothing could run: weights unavailable, output not writable, bad options, folder locked
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); SIGTERM gives 143 (128 + SIGTERM)


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
    rate: int = 0
    channels: int = 0


@dataclass
class BatchSummary:
    results: list[FileResult] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)  # walked past: hidden, not audio, ...
    interrupted_by: int = 0  # signal number that ended the run early, 0 if none
    wall_s: float = 0.0  # wall time of parallel processing (0: the files' own times add up to it)

    def count(self, status: Status) -> int:
        return sum(r.status is status for r in self.results)

    @property
    def exit_code(self) -> int:
        if self.interrupted_by:
            return 128 + self.interrupted_by
        return EXIT_FAILURES if self.count(Status.FAILED) else EXIT_OK

    def lines(self) -> list[str]:
        done, skipped, failed = (self.count(s) for s in Status)
        audio = sum(r.seconds for r in self.results if r.status is Status.DONE)
        wall = self.wall_s or sum(r.elapsed for r in self.results if r.status is Status.DONE)
        speed = f", {audio / wall:.1f}x real time" if wall > 0 else ""
        out = [f"done {done}, skipped {skipped}, failed {failed} ({audio:.1f} s of audio{speed})"]
        reasons: dict[str, int] = {}
        for r in self.results:
            if r.status is Status.SKIPPED:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
        for _, reason in self.ignored:
            reasons[f"ignored: {reason}"] = reasons.get(f"ignored: {reason}", 0) + 1
        out += [f"  {n} {reason}" for reason, n in sorted(reasons.items())]
        out += [
            f"  FAILED {printable(r.source)}: {r.reason}" for r in self.results if r.status is Status.FAILED
        ]
        if self.interrupted_by:
            out.append("interrupted — rerun to resume")
        return out


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs (see :func:`run_batch`)."""

    overwrite: bool = False
    suffix: str | None = None
    subtype: str | None = None
    with_hash: bool = False
    score: bool = False
    verbose: bool = False
    progress: bool = True
    workers: int | str = 1


def run_batch(
    input_path: Path,
    output_dir: Path,
    make_denoiser: Callable[[], Any],
    *,
    settings: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    suffix: str | None = None,
    subtype: str | None = None,
    manifest_path: Path | None = None,
    with_hash: bool = False,
    score: bool = False,
    wait: bool = False,
    verbose: bool = False,
    progress: bool = True,
    workers: int | str = 1,
    echo: Callable[[str], None] | None = None,
) -> BatchSummary:
    """Denoise every input (folder walked recursively, single file, or input list) into ``output_dir``.

    ``make_denoiser`` is called once, and only if there is work to do (so an all-done rerun never loads
    weights); exceptions it raises propagate (the caller turns them into exit status 2). ``settings``
    are what makes an output (model, weights sha256, engine knobs, format): their hash is recorded and
    resume redoes outputs made with other settings. ``score`` adds DNSMOS SIG/BAK/OVRL of each input and
    output to its manifest row (``dnsmos_*_before``/``_after``). ``workers``: processes that denoise
    (``"auto"``: see :func:`denoise.workers.resolve_workers`; more than 1 needs ``make_denoiser`` to be a
    :class:`denoise.workers.DenoiserFactory`); 1 runs in this process.
    """
    from tqdm.auto import tqdm

    say = echo or (lambda line: tqdm.write(line, file=sys.stderr))
    input_path, output_dir = Path(os.path.abspath(input_path)), Path(os.path.abspath(output_dir))
    if suffix or subtype:  # a bad --format/--subtype is refused before any work
        try:
            check_output_format(Path("probe" + (suffix or ".wav")), subtype)
        except AudioError as err:
            raise SetupError(str(err)) from err
    if score and importlib.util.find_spec("speechmos") is None:
        raise SetupError("--score needs DNSMOS: pip install speechmos")
    check_folders(input_path, output_dir)
    opts = BatchOptions(overwrite, suffix, subtype, with_hash, score, verbose, progress, workers)
    manifest_path = Path(manifest_path or output_dir / MANIFEST_NAME)
    the_settings = {**(settings or {}), "suffix": suffix, "subtype": subtype}
    digest = settings_hash(the_settings)
    summary = BatchSummary()
    with output_lock(output_dir, wait=wait, echo=say), interruptible():
        try:
            _run_locked(
                input_path, output_dir, make_denoiser, summary, manifest_path, digest, the_settings, opts, say
            )
        except (KeyboardInterrupt, Interrupted) as err:
            summary.interrupted_by = err.signum if isinstance(err, Interrupted) else signal.SIGINT
    return summary


def _run_locked(
    input_path: Path,
    output_dir: Path,
    make_denoiser: Callable[[], Any],
    summary: BatchSummary,
    manifest_path: Path,
    digest: str,
    settings: Mapping[str, Any],
    opts: BatchOptions,
    say: Callable[[str], None],
) -> None:
    from tqdm.auto import tqdm

    stale = remove_stale_temps(output_dir)
    if opts.verbose and stale:
        say(f"removed {len(stale)} temp file(s) left by a killed run")
    files, base, summary.ignored = gather_inputs(input_path, output_dir)
    plan = plan_outputs(files, base, output_dir, opts.suffix)
    if opts.verbose:
        for path, reason in summary.ignored:
            say(f"  ignored {printable(path)}: {reason}")
        for source, target in plan.renamed:
            say(f"  name clash: {printable(source)} -> {printable(target)}")
        for source, target in plan.targets.items():
            say(f"  plan {printable(source)} -> {printable(target)}")
    with ManifestWriter(manifest_path) as manifest:

        def record(result: FileResult, extra: Mapping[str, Any] | None = None) -> None:
            summary.results.append(result)
            manifest.append(_row(result, settings, digest, extra or {}))

        for source, (target, reason) in plan.problems.items():
            record(FileResult(source, target, Status.FAILED, reason))
            say(format_result(FileResult(source, target, Status.FAILED, reason), base))
        rows = (
            []
            if opts.overwrite
            else [r for r in read_manifest(manifest_path) if r.get("status") != "skipped"]
        )
        todo: list[tuple[Path, Path]] = []
        for decision in plan_resume(plan.targets.items(), rows, digest, with_hash=opts.with_hash):
            target = plan.targets[decision.source]
            if decision.reuse:
                record(FileResult(decision.source, target, Status.SKIPPED, "done earlier"))
                if opts.verbose:
                    say(format_result(summary.results[-1], base))
            else:
                todo.append((decision.source, target))
        if not todo:
            return
        workers = resolve_workers(opts.workers, [source for source, _ in todo], make_denoiser)
        denoiser = make_denoiser() if workers == 1 else None
        together = files_in_flight(denoiser)
        if together > 1:  # files share the network's batches: neighbours in length share widths
            todo = sort_by_length(todo, key=lambda pair: pair[0])
        before: dict[Path, dict[str, Any] | None] = {}  # identity of each input taken before its run
        bar = tqdm(
            total=len(todo), unit="file", disable=not opts.progress, file=sys.stderr, dynamic_ncols=True
        )

        def tasks() -> Iterator[tuple[tuple[Path, Path], tuple[Path, Path, str | None]]]:
            for source, target in todo:
                bar.set_postfix_str(printable(source.name)[-40:])
                before[source] = _identity_or_none(source, opts.with_hash)
                yield (source, target), (source, target, opts.subtype or required_subtype(target))

        def finish(result: FileResult) -> None:
            source, target = result.source, result.target
            if result.status is Status.DONE and not _unchanged(source, before.get(source)):
                with contextlib.suppress(OSError):  # made from a moving target: not a result
                    target.unlink()
                result.status = Status.FAILED
                result.reason = (
                    "the input changed while it was processed (still being copied?); rerun to redo"
                )
            extra = dict(before.get(source) or {})
            if opts.score and result.status is Status.DONE:
                try:
                    extra |= dnsmos_before_after(source, target)
                except Exception as err:  # a score is a bonus: never fail a written result over it
                    result.notes.append(f"no DNSMOS score ({type(err).__name__}: {err})".splitlines()[0])
            with signals_deferred():  # an interruption lands before the row (unpublished) or after both
                record(result, extra)
                before.pop(source, None)  # recorded: no longer "published but without a row"
            say(format_result(result, base))
            bar.update()

        started_ns = time.time_ns()
        with bar:
            try:
                if denoiser is not None and together == 1:
                    for _, args in tasks():
                        finish(process_one(denoiser, *args))
                elif denoiser is not None:
                    _run_parallel(FilesTogether(denoiser, process_one, together), tasks(), finish, summary)
                    if opts.verbose:
                        stats = denoiser.backend.stats
                        say(f"{stats.calls} network calls, {stats.occupancy:.0%} of their rows carried audio")
                else:
                    if opts.verbose:
                        say(f"{workers} worker processes")
                    pool = WorkerPool(make_denoiser, process_one, workers)
                    _run_parallel(pool, tasks(), finish, summary)
            except (KeyboardInterrupt, Interrupted):
                _unpublish([target for source, target in todo if source in before], started_ns)
                raise


def _unpublish(targets: list[Path], since_ns: int) -> None:
    """Remove the outputs an interruption caught between their publication and their manifest row (written
    since ``since_ns``): every published output has its row; the rerun redoes these files."""
    for target in targets:
        with contextlib.suppress(OSError):
            if target.stat().st_mtime_ns >= since_ns:
                target.unlink()


def _run_parallel(
    pool: WorkerPool | FilesTogether,
    tasks: Iterator[tuple[tuple[Path, Path], tuple[Path, Path, str | None]]],
    finish: Callable[[FileResult], None],
    summary: BatchSummary,
) -> None:
    """``tasks`` through worker processes or threads; each result is finished here, in the main thread."""

    def arrived(key: tuple[Path, Path], result: FileResult | Lost) -> None:
        if isinstance(result, Lost):  # the dead worker left its temp file: its pid says whose it was
            with contextlib.suppress(OSError):
                remove_stale_temps(key[1].parent, recursive=False)
            result = FileResult(*key, Status.FAILED, result.reason)
        finish(result)

    with pool:
        start = time.perf_counter()
        try:
            with contextlib.closing(pool.run(tasks)) as results:  # closed at once: signals come back
                for key, result in results:
                    arrived(key, result)
        except (KeyboardInterrupt, Interrupted):
            for key, result in pool.stop():  # finished before the signal: they keep their rows
                arrived(key, result)
            raise
        finally:
            summary.wall_s = time.perf_counter() - start


def _unchanged(source: Path, before: Mapping[str, Any] | None) -> bool:
    """Size and mtime as before processing (no re-hash: that would read a large input twice)."""
    now = _identity_or_none(source, False)
    return bool(before and now) and all(now[k] == before[k] for k in ("input_size", "input_mtime_ns"))


def _identity_or_none(source: Path, with_hash: bool) -> dict[str, Any] | None:
    try:
        return input_identity(source, with_hash=with_hash)
    except OSError:
        return None


def _row(result: FileResult, settings: Mapping[str, Any], digest: str, extra: Mapping[str, Any]) -> dict:
    """The manifest row of one result (``extra``: identity taken before processing, scores)."""
    out_size = out_frames = None
    if result.status is Status.DONE:
        with contextlib.suppress(OSError, RuntimeError):
            import soundfile as sf

            out_size = result.target.stat().st_size
            out_frames = sf.info(os.fsencode(result.target)).frames
    return {
        "input": path_text(result.source),
        **(_identity_or_none(result.source, False) or {}),
        **extra,
        "output": path_text(result.target),
        "output_size": out_size,
        "output_frames": out_frames,
        "duration": round(result.seconds, 6),
        "rate": result.rate or None,
        "channels": result.channels or None,
        "model": settings.get("model"),
        "weights_sha256": settings.get("weights_sha256"),
        "settings_hash": digest,
        "status": str(result.status),
        "reason": result.reason,
        "wall_s": round(result.elapsed, 4),
        "notes": result.notes,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def process_one(denoiser: Any, source: Path, target: Path, subtype: str | None) -> FileResult:
    """Denoise one file; every failure becomes a :class:`FileResult` with a one-line reason.

    KeyboardInterrupt and SIGTERM are not failures: they propagate (the sink removes its temp file).
    """
    start = time.perf_counter()
    try:
        enhanced = denoiser.enhance_file(source, target, subtype=subtype)
    except AudioError as err:
        return FileResult(source, target, Status.FAILED, str(err), elapsed=time.perf_counter() - start)
    except MemoryError:
        return FileResult(source, target, Status.FAILED, "out of memory: try a smaller --chunk-seconds")
    except Exception as err:  # one file must never take the batch down; say what it was
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        return FileResult(source, target, Status.FAILED, reason, elapsed=time.perf_counter() - start)
    samples = enhanced.samples
    return FileResult(
        source,
        target,
        Status.DONE,
        notes=list(enhanced.notes),
        seconds=samples.shape[-1] / enhanced.sample_rate,
        elapsed=time.perf_counter() - start,
        rate=int(enhanced.sample_rate),
        channels=int(samples.shape[0]) if samples.ndim == 2 else 1,
    )


def format_result(result: FileResult, base: Path) -> str:
    """One line per file, e.g. ``✓ talk.wav (12.0 s) -> output/talk.wav``."""
    try:
        name = printable(result.source.relative_to(base))
    except ValueError:
        name = printable(result.source)
    if result.status is Status.FAILED:
        return f"✗ {name}: {result.reason}"
    if result.status is Status.SKIPPED:
        return f"- {name}: skipped ({result.reason}; --overwrite to redo)"
    extra = f" [{'; '.join(result.notes)}]" if result.notes else ""
    return f"✓ {name} ({result.seconds:.1f} s) -> {printable(result.target)}{extra}"


def print_summary(summary: BatchSummary) -> None:
    """The closing lines of a batch, on stderr (stdout stays free for machine-readable output)."""
    for line in summary.lines():
        print(line, file=sys.stderr)
