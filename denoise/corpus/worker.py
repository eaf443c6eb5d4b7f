"""What one worker does with one input: fetch, enhance, publish, describe. No Ray in here.

:class:`EnhanceActor` is the class Ray Data instantiates once per actor (so the model loads once per
worker); it is plain Python, so the per-file path is tested without a cluster.
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from denoise.audio import AudioError
from denoise.corpus.records import DONE, FAILED
from denoise.corpus.storage import filesystem, is_local, sha256_file
from denoise.engine.batching import FilesTogether, files_in_flight


@dataclass(frozen=True)
class CorpusJob:
    """What every worker needs besides the model: where things are and what to record."""

    settings_hash: str
    weights_sha256: str | None
    storage_options: dict[str, Any] = field(default_factory=dict)
    subtype: str | None = None
    score: bool = False  # DNSMOS before and after, per file
    hash_inputs: bool = False  # record each input's sha256


def process_item(denoiser: Any, item: dict[str, Any], job: CorpusJob) -> dict[str, Any]:
    """Denoise ``item`` (``input``, ``output``, ``input_size``, ``input_mtime_ns``) and return its manifest row.

    A bad file becomes a ``failed`` row with a one-line reason; only a dying process loses the row (Ray
    then retries the file, and the atomic writes mean no partial output is ever visible).
    """
    start = time.perf_counter()
    record = {
        "input": item["input"],
        "input_size": item["input_size"],
        "input_mtime_ns": item["input_mtime_ns"],
        "output": item["output"],
        "model": denoiser.config.model,
        "weights_sha256": job.weights_sha256,
        "settings_hash": job.settings_hash,
        "node": _node_name(),
    }
    try:
        with tempfile.TemporaryDirectory(prefix="denoise-corpus-") as scratch:
            record.update(_enhance_one(denoiser, item, job, Path(scratch)))
        record.update(status=DONE, reason="")
    except AudioError as err:
        record.update(status=FAILED, reason=str(err))
    except MemoryError:
        record.update(status=FAILED, reason="out of memory: try a smaller --chunk-seconds")
    except Exception as err:  # one file must never take the run down; say what it was
        record.update(status=FAILED, reason=f"{type(err).__name__}: {err}".splitlines()[0])
    record["wall_s"] = round(time.perf_counter() - start, 4)
    record["finished_at"] = time.time()
    return record


def _enhance_one(denoiser: Any, item: dict[str, Any], job: CorpusJob, scratch: Path) -> dict[str, Any]:
    in_fs, in_path = filesystem(item["input"], job.storage_options)
    out_fs, out_path = filesystem(item["output"], job.storage_options)
    source = Path(in_path) if is_local(in_fs) else scratch / ("input" + Path(in_path).suffix)
    if not is_local(in_fs):
        in_fs.get_file(in_path, str(source))
    # Local outputs: the engine writes them through the atomic writer. Remote: a complete local file,
    # then one upload.
    written = Path(out_path) if is_local(out_fs) else scratch / ("output" + Path(out_path).suffix)
    enhanced = denoiser.enhance_file(source, written, subtype=job.subtype)
    facts: dict[str, Any] = {
        "duration": enhanced.samples.shape[-1] / enhanced.sample_rate,
        "rate": enhanced.sample_rate,
        "channels": int(enhanced.samples.shape[0]),
        "notes": "; ".join(enhanced.notes),
        "output_size": written.stat().st_size,
        "output_sha256": sha256_file(written),
    }
    if job.hash_inputs:
        facts["input_sha256"] = sha256_file(source)
    if job.score:
        from denoise.manifest import dnsmos_before_after

        facts.update(dnsmos_before_after(source, written))
    if not is_local(out_fs):
        out_fs.put_file(str(written), out_path)
    return facts


def _node_name() -> str:
    """The Ray node id when running on Ray (several nodes may share a host), else the host name."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()


class EnhanceActor:
    """A Ray Data actor: loads the Denoiser once, then turns batches of inputs into manifest rows.

    On a GPU (``batch_size`` > 1) the files of a batch are denoised side by side so their rows share the
    network's calls (:mod:`denoise.engine.batching`); on a CPU, one after the other.

    Rows go back as JSON strings in one ``record`` column, so Arrow never has to agree on a schema for
    optional fields (scores, input hashes) across batches.
    """

    def __init__(self, config: dict[str, Any], job: dict[str, Any]) -> None:
        from denoise.engine import Denoiser, DenoiserConfig

        self.denoiser = Denoiser(DenoiserConfig(**config))
        self.job = CorpusJob(**job)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        names = list(batch)
        rows = [_plain(dict(zip(names, values, strict=True))) for values in zip(*batch.values(), strict=True)]
        together = min(len(rows), files_in_flight(self.denoiser))
        if together > 1:  # a GPU actor: the batch's files share the network's calls, same bits as alone
            with FilesTogether(self.denoiser, process_item, together) as pool:
                done = dict(pool.run((k, (row, self.job)) for k, row in enumerate(rows)))
            records = [done[k] for k in range(len(rows))]
        else:
            records = [process_item(self.denoiser, row, self.job) for row in rows]
        return {"record": [json.dumps(record, default=str) for record in records]}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars (Ray Data's batches) -> Python values."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()}
