"""The driver of a corpus run on Ray Data: list, plan the resume, stream rows into the manifest.

    inputs (folder / glob / manifest, local or fsspec URL)
      -> plan: drop inputs whose last manifest row is done with these settings and whose output is intact
      -> ray.data.from_items(one block per input)
      -> map_batches(EnhanceActor, concurrency=workers, num_cpus/num_gpus per actor)   [model loaded once]
      -> iter_rows on the driver: each row is appended (fsync) to the manifest as it arrives

Fault tolerance: actors are created with ``max_restarts=-1`` and ``max_task_retries=-1``, so when a node
or worker process dies, Ray restarts the actor (on any node with room) and re-runs the files it held.
Outputs are atomic (a local rename, or one upload of a complete file), so a re-run file never leaves a
partial or second copy; the driver keeps exactly one row per input even if Ray delivers a re-executed
result twice. A crash of the driver loses nothing already in the manifest: the next run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from denoise.corpus.records import (
    DONE,
    FAILED,
    ManifestWriter,
    effective_settings,
    is_done,
    latest_rows,
    read_manifest,
    settings_hash,
)
from denoise.corpus.storage import CorpusError, filesystem, is_local, list_inputs, output_intact, target_for
from denoise.corpus.worker import CorpusJob, EnhanceActor
from denoise.engine import DenoiserConfig
from denoise_models.atomic import remove_stale_temps

EXIT_OK, EXIT_FAILURES, EXIT_SETUP = 0, 1, 2


@dataclass
class CorpusOptions:
    """Where the corpus is, where results go, and how much of the cluster to use."""

    input: str  # folder, glob, audio file or input manifest; local path or fsspec URL
    output: str  # folder, local path or fsspec URL
    manifest: str | None = (
        None  # local JSONL run manifest (default: OUTPUT/manifest.jsonl for a local OUTPUT)
    )
    address: str | None = (
        None  # Ray cluster: None = $RAY_ADDRESS or a fresh local one; "auto"; "ray://h:10001"
    )
    workers: int = 1  # actors, each with its own copy of the model
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional: several actors share a GPU
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options, e.g. endpoint_url
    suffix: str | None = None  # output extension (".flac"); None = the input's
    subtype: str | None = None
    score: bool = False
    hash_inputs: bool = False
    progress: bool = True


@dataclass
class CorpusSummary:
    total: int = 0
    skipped: int = 0  # done before, output intact, same settings
    records: list[dict[str, Any]] = field(default_factory=list)  # rows written by this run
    duplicates: int = 0  # re-executed results Ray delivered twice (not written again)

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.records)

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURES if self.count(FAILED) else EXIT_OK

    def lines(self) -> list[str]:
        audio = sum(r.get("duration", 0.0) for r in self.records if r["status"] == DONE)
        out = [
            f"done {self.count(DONE)}, skipped {self.skipped}, failed {self.count(FAILED)} "
            f"of {self.total} inputs ({audio:.1f} s of audio)"
        ]
        return out + [f"  FAILED {r['input']}: {r['reason']}" for r in self.records if r["status"] == FAILED]


def default_manifest(options: CorpusOptions) -> Path:
    """``--manifest``, or ``manifest.jsonl`` in a local output folder; remote outputs must name one."""
    if options.manifest:
        return Path(options.manifest)
    fs, path = filesystem(options.output, options.storage_options)
    if not is_local(fs):
        raise CorpusError(
            "the output is not a local folder: give --manifest PATH (a local file) for the run records"
        )
    return Path(path) / "manifest.jsonl"


def plan(
    options: CorpusOptions, settings_digest: str, manifest_rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """``(items to process, number skipped)``; each item is a dict :func:`process_item` understands."""
    out_fs, out_path = filesystem(options.output, options.storage_options)
    in_fs, in_path = filesystem(options.input, options.storage_options)
    if type(in_fs) is type(out_fs) and in_path.rstrip("/") == out_path.rstrip("/"):
        raise CorpusError("output is the input: results would replace your recordings")
    output_base = options.output if not is_local(out_fs) else out_path
    inputs = list_inputs(options.input, options.storage_options, exclude=options.output)
    last = latest_rows(manifest_rows)
    todo, skipped = [], 0
    for source in inputs:
        item = {**asdict(source), "output": target_for(output_base, source.rel, options.suffix)}
        row = last.get(item["input"])
        if row is not None and options.hash_inputs and row.get("input_sha256"):
            item["input_sha256"] = _input_sha256(item["input"], options.storage_options)
        intact = row is not None and output_intact(item["output"], row, options.storage_options)
        if is_done(row, item, settings_digest, intact):
            skipped += 1
        else:
            item.pop("input_sha256", None)
            todo.append(item)
    return todo, skipped


def _input_sha256(url: str, storage_options: dict[str, Any]) -> str:
    fs, path = filesystem(url, storage_options)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_corpus(
    config: DenoiserConfig, options: CorpusOptions, *, echo: Callable[[str], None] | None = None
) -> CorpusSummary:
    """Denoise every input of ``options`` on a Ray cluster with ``config``; rows stream into the manifest.

    Raises :class:`CorpusError` (nothing processed) for unusable inputs/outputs; Ray's own errors propagate.
    """
    say = echo or (lambda line: print(line, file=sys.stderr))
    if config.threads is None:  # one intra-op thread per reserved CPU: actors must not fight over cores
        config = replace(config, threads=max(1, round(options.cpus_per_worker)))
    settings = effective_settings(config, subtype=options.subtype, suffix=options.suffix)
    digest = settings_hash(settings)
    manifest_path = default_manifest(options)
    out_fs, out_path = filesystem(options.output, options.storage_options)
    if is_local(out_fs):
        Path(out_path).mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_path)  # temp files of a killed run; finished outputs are never touched
    todo, skipped = plan(options, digest, read_manifest(manifest_path))
    summary = CorpusSummary(total=len(todo) + skipped, skipped=skipped)
    if not todo:
        return summary
    job = CorpusJob(
        settings_hash=digest,
        weights_sha256=settings["weights_sha256"],
        storage_options=options.storage_options,
        subtype=options.subtype,
        score=options.score,
        hash_inputs=options.hash_inputs,
    )
    seen: set[str] = set()
    with ManifestWriter(manifest_path) as manifest, ray_session(options) as ray:
        for row in _pipeline(ray, todo, config, job, options).iter_rows():
            record = json.loads(row["record"])
            if record["input"] in seen:  # one row per input; a re-executed file made the same bytes
                summary.duplicates += 1
                continue
            seen.add(record["input"])
            manifest.append(record)
            summary.records.append(record)
            if options.progress:
                say(_format(record))
    if is_local(out_fs):
        # A worker killed mid-file (its node lost) left a temp file; Ray redid the file elsewhere. Temps of
        # processes on this machine are recognised at once, other machines' after a day (denoise_models.atomic).
        remove_stale_temps(out_path)
    return summary


def _pipeline(
    ray: Any, todo: list[dict[str, Any]], config: DenoiserConfig, job: CorpusJob, options: CorpusOptions
):
    """The Ray Data plan: one block per input so files spread over every actor."""
    if files_per_call(config, options) > 1:  # neighbours share widths: for one format, size follows length
        todo = sorted(todo, key=lambda item: item["input_size"])
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    return ds.map_batches(
        EnhanceActor,
        batch_size=files_per_call(config, options),
        concurrency=options.workers,
        num_cpus=options.cpus_per_worker,
        num_gpus=options.gpus_per_worker or None,
        fn_constructor_kwargs={"config": asdict(config), "job": asdict(job)},
        # A dead node or worker: restart the actor elsewhere and re-run its files (also Ray Data's default).
        max_restarts=-1,
        max_task_retries=-1,
        scheduling_strategy="SPREAD",  # actors over as many nodes as possible: a lost node costs less
    )


def files_per_call(config: DenoiserConfig, options: CorpusOptions) -> int:
    """Files an actor gets per call: 1 on CPUs; on GPUs enough to fill two of its batches (the actor runs
    them side by side: :class:`denoise.corpus.worker.EnhanceActor`). A retried call redoes them all: the
    outputs are written atomically and the driver keeps one row per input."""
    rows = config.batch_size or (8 if options.gpus_per_worker > 0 else 1)
    return 1 if rows == 1 else 2 * rows


@contextlib.contextmanager
def ray_session(options: CorpusOptions) -> Iterator[Any]:
    """Connect to (or start) Ray for one run; always disconnect, even on Ctrl-C."""
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise CorpusError(
            "the cluster path needs Ray: pip install 'speech-denoise-workstation[cluster]'"
        ) from err
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
    if options.address is None and not os.environ.get("RAY_ADDRESS"):
        kwargs["include_dashboard"] = False  # a private local cluster: nothing listens beyond it
    ray.init(address=options.address, **kwargs)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = options.progress
        yield ray
    finally:
        ray.shutdown()


def _format(record: dict[str, Any]) -> str:
    if record["status"] == FAILED:
        return f"✗ {record['input']}: {record['reason']}"
    return f"✓ {record['input']} ({record.get('duration', 0.0):.1f} s) -> {record['output']}"
