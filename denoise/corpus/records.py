"""Manifest rows of a corpus run: the settings hash and the resume rule for URLs.

Rows are read and appended by :mod:`denoise.manifest` (the one manifest implementation: JSONL, one
``write`` + ``fsync`` per row, same field names as the single-machine runner). What is added here is only
what object storage needs: :func:`denoise.manifest.plan_resume` checks local paths (``stat``, the output's
audio header), while a corpus input or output may be an ``s3://`` URL, so :func:`is_done` applies the same
rule to fields the driver gathered through fsspec.
"""

from __future__ import annotations

from typing import Any

from denoise.engine import DenoiserConfig
from denoise.manifest import ManifestWriter, engine_settings, latest_rows, read_manifest, settings_hash

__all__ = [
    "DONE",
    "FAILED",
    "ManifestWriter",
    "effective_settings",
    "is_done",
    "latest_rows",
    "read_manifest",
    "settings_hash",
]

DONE, FAILED = "done", "failed"


def effective_settings(config: DenoiserConfig, *, subtype: str | None, suffix: str | None) -> dict[str, Any]:
    """The batch runner's engine settings plus the output format (both change an output's bytes)."""
    return {**engine_settings(config), "subtype": subtype, "suffix": suffix}


def is_done(
    row: dict[str, Any] | None, item: dict[str, Any], settings_digest: str, output_intact: bool
) -> bool:
    """The resume rule of :func:`denoise.manifest.plan_resume`, on fsspec facts: the input's last row is
    ``done`` with these settings, for the same output, the input has the recorded size and mtime (and
    sha256 when recorded) and the output is intact."""
    if row is None or row.get("status") != DONE or row.get("settings_hash") != settings_digest:
        return False
    if row.get("input_size") != item["input_size"] or row.get("input_mtime_ns") != item["input_mtime_ns"]:
        return False
    if row.get("input_sha256") and item.get("input_sha256") and row["input_sha256"] != item["input_sha256"]:
        return False
    return row.get("output") == item["output"] and output_intact
