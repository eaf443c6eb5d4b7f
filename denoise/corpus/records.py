"""Manifest records of a corpus run: what one row says, the settings hash, and when an input is done.

This is the ONE place the corpus path touches the run manifest. Reading and appending rows and the
resume rule belong to :mod:`denoise.manifest` (the single-machine batch runner's module); until that
module is merged, the three functions below are its thin stand-ins with the same names and meaning:

- :func:`read_manifest` -> every row (a torn last line from a crash is ignored);
- :class:`ManifestWriter` ``.append(record)`` -> one JSON line, flushed and fsynced before it returns;
- :func:`is_done` -> the resume rule: the input's last row is ``done`` with the current settings hash,
  the input still has the recorded size and modification time (and content hash when recorded), and
  the output is intact.

JSONL because a row is appended with one ``write`` + ``fsync`` (a crash loses at most the row being
written, never earlier ones) and anyone can read it (``pandas.read_json(path, lines=True)``, DuckDB
``read_json_auto``); Parquet files cannot be appended to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from denoise.engine import DenoiserConfig

DONE, SKIPPED, FAILED = "done", "skipped", "failed"

# DenoiserConfig fields that choose where or how fast the model runs, not what it outputs.
_PLACEMENT_FIELDS = ("device", "threads", "weights", "onnx_path")


def effective_settings(config: DenoiserConfig, *, subtype: str | None, suffix: str | None) -> dict[str, Any]:
    """Everything that decides an output's bytes: engine settings, the weights' sha256, output format."""
    from denoise_models import default_weights, resolve_weights
    from denoise_models.weights import sha256_of

    settings = {k: v for k, v in asdict(config).items() if k not in _PLACEMENT_FIELDS}
    weights = config.weights
    if weights == "default":
        weights = default_weights(config.model)
    settings["weights_sha256"] = sha256_of(resolve_weights(weights, progress=False)) if weights else None
    if config.onnx_path:
        settings["onnx_sha256"] = sha256_of(Path(config.onnx_path))
    settings["subtype"] = subtype
    settings["suffix"] = suffix
    return settings


def settings_hash(settings: dict[str, Any]) -> str:
    """A short stable digest of :func:`effective_settings` (the manifest's ``settings_hash`` column)."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSONL manifest, in order; [] if it does not exist. Torn rows (a crash mid-write,
    fenced off by the next run's writer) are ignored: their files are redone."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open("rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # the row a crash interrupted
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line)) if line.strip() else None
    return rows


class ManifestWriter:
    """Appends rows to a JSONL manifest; each :meth:`append` is on disk before it returns."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("ab")
        if self._file.tell() and not _ends_with_newline(self.path):
            self._file.write(b"\n")  # fence off a torn row left by a crash

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True, default=str).encode() + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def latest_rows(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last row per input (later runs supersede earlier ones)."""
    return {row["input"]: row for row in rows}


def is_done(
    row: dict[str, Any] | None, item: dict[str, Any], settings_digest: str, output_intact: bool
) -> bool:
    """The resume rule: reuse an output only when its row, the input, the settings and the file all match."""
    if row is None or row.get("status") != DONE or row.get("settings_hash") != settings_digest:
        return False
    if row.get("input_bytes") != item["input_bytes"] or row.get("input_mtime") != item["input_mtime"]:
        return False
    if row.get("input_sha256") and item.get("input_sha256") and row["input_sha256"] != item["input_sha256"]:
        return False
    return row.get("output") == item["output"] and output_intact
