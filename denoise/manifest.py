"""The results manifest and the resume rules: one row per input per run, appended as each file finishes.

Format: JSON Lines at ``<output>/.denoise-manifest.jsonl`` (or ``--manifest PATH``). Why JSONL: it is
append-only (one ``write`` of one line plus ``fsync`` per finished file, so a crash or kill -9 loses
nothing already done, and a torn last line is simply ignored on reading), needs no extra package, and
pandas (``pd.read_json(p, lines=True)``) and DuckDB (``read_json_auto(p)``) read it directly. Parquet
cannot be appended to without rewriting the file.

Resume (:func:`plan_resume`): an output is reused only when the input's latest row says ``done`` and
its input identity (path, size, mtime; sha256 when hashing) and settings hash match now, and the
output file is intact (exists, same size, header frames as recorded). Anything else is redone. The
same functions serve the single-machine runner and the cluster runner.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

MANIFEST_NAME = ".denoise-manifest.jsonl"
# Row fields, in order (a row may carry more, e.g. DNSMOS scores with --score).
FIELDS = (
    "input", "input_size", "input_mtime_ns", "input_sha256", "output", "output_size", "output_frames",
    "duration", "rate", "channels", "model", "weights_sha256", "settings_hash", "status", "reason",
    "wall_s", "notes", "finished_at",
)  # fmt: skip


def path_text(path: str | Path) -> str:
    """A path as JSON can hold it: non-UTF-8 bytes kept as surrogate escapes (round-trips via os.fsencode)."""
    return os.fsdecode(os.fsencode(path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(path: Path, *, with_hash: bool = False) -> dict[str, Any]:
    """The fields that say "this is the same input as before": size, mtime (ns) and optionally sha256."""
    st = path.stat()
    return {
        "input_size": st.st_size,
        "input_mtime_ns": st.st_mtime_ns,
        "input_sha256": file_sha256(path) if with_hash else None,
    }


def settings_hash(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that change an output (sorted JSON, sha256, 16 hex)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ManifestWriter:
    """Append rows to a JSONL manifest: one ``write`` + ``fsync`` per row, so a row is whole or absent."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1  # opened with the first row: a run that writes nothing leaves no manifest
        self._torn = False  # the file ended mid-row when opened (see append)

    def append(self, record: Mapping[str, Any]) -> None:
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: writers sharing one file (cluster workers) never interleave within a line.
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
            self._fd = os.open(self.path, flags, 0o666)
            self._torn = _ends_torn(self.path)
        line = json.dumps(dict(record), ensure_ascii=True, default=str) + "\n"  # ascii: no encoding issues
        data = line.encode("ascii", "backslashreplace")
        if self._torn:  # a crash cut the last row short: end it, so this row stays readable on its own line
            data, self._torn = b"\n" + data, False
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"manifest row cut short ({written} of {len(data)} bytes)")
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL manifest (a torn or garbled line, e.g. from a power cut, is skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    row = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    except FileNotFoundError:
        return []
    return rows


def read_input_list(path: str | Path) -> list[Path]:
    """Input paths from a ``.csv``, ``.jsonl`` or ``.parquet`` list with a ``path`` column.

    Relative paths are taken relative to the list's folder. Parquet needs pyarrow (imported only here).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
            values = [row.get("path") for row in csv.DictReader(fh)]
    elif suffix in (".jsonl", ".ndjson"):
        values = [row.get("path") for row in read_manifest(path)]
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading a .parquet input list needs pyarrow: pip install pyarrow") from None
        table = pq.read_table(path, columns=["path"])
        values = table.column("path").to_pylist()
    else:
        raise ValueError(f"an input list must be .csv, .jsonl or .parquet, not {path.suffix!r}")
    if not values or any(v in (None, "") for v in values):
        raise ValueError(f"{path.name}: every row needs a non-empty 'path' column")
    return [p if (p := Path(str(v))).is_absolute() else path.parent / p for v in values]


def latest_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The last row per input path."""
    return {str(row.get("input")): row for row in rows}


def output_intact(row: Mapping[str, Any]) -> bool:
    """The row's output exists, has the recorded size, and its header reads back the recorded frames."""
    out = Path(str(row.get("output") or ""))
    try:
        if not out.is_file() or out.stat().st_size != row.get("output_size"):
            return False
        return sf.info(os.fsencode(out)).frames == row.get("output_frames")
    except (OSError, RuntimeError, sf.LibsndfileError):
        return False


@dataclass
class ResumeDecision:
    source: Path
    reuse: bool  # True: the recorded output stands; False: (re)do it
    reason: str  # why it is redone (empty when reused or new)


def plan_resume(
    items: Iterable[tuple[Path, Path]],
    rows: Iterable[Mapping[str, Any]],
    settings: str,
    *,
    with_hash: bool = False,
) -> list[ResumeDecision]:
    """For each ``(input, planned output)``: can its recorded output stand? By the module's resume rules.

    ``rows`` are the manifest's rows of earlier runs ("skipped" rows left out by the caller or not: the
    latest row that records work is what counts).
    """
    latest = latest_rows(r for r in rows if r.get("status") != "skipped")
    decisions = []
    for source, target in items:
        row = latest.get(path_text(source))
        reuse, reason = False, ""
        if row is None:
            pass
        elif row.get("status") != "done":
            reason = f"last run: {row.get('status')}"
        elif row.get("settings_hash") != settings:
            reason = "made with other settings"
        elif row.get("output") != path_text(target):
            reason = "output name changed"
        else:
            try:
                now = input_identity(source, with_hash=with_hash and bool(row.get("input_sha256")))
            except OSError:
                now = {}
            if any(now.get(k) != row.get(k) for k in ("input_size", "input_mtime_ns")) or (
                now.get("input_sha256") and now["input_sha256"] != row.get("input_sha256")
            ):
                reason = "input changed"
            elif not output_intact(row):
                reason = "output missing or damaged"
            else:
                reuse = True
        decisions.append(ResumeDecision(source, reuse, reason))
    return decisions


def dnsmos_before_after(source: Path, target: Path) -> dict[str, float | None]:
    """DNSMOS SIG/BAK/OVRL of the input and of the output (channels averaged), for ``--score``."""
    from denoise.audio import read_audio
    from denoise.metrics import dnsmos_scores, to_16k

    scores: dict[str, float | None] = {}
    for when, path in (("before", source), ("after", target)):
        audio = read_audio(path)
        values, _ = dnsmos_scores(to_16k(audio.samples.mean(axis=0), audio.sample_rate))
        for name in ("sig", "bak", "ovrl"):
            value = values[f"dnsmos_{name}"]
            scores[f"dnsmos_{name}_{when}"] = None if value != value else round(value, 4)  # NaN -> null
    return scores


def engine_settings(config: Any) -> dict[str, Any]:
    """The settings that change an output, from a ``DenoiserConfig``: what :func:`settings_hash` hashes.

    Device, threads and batch size are left out (they change speed, not the result beyond float noise).
    The weights are identified by their sha256, so a re-fetched or renamed file is still the same model.
    """
    fields = ("model", "backend", "precision", "chunk_seconds", "overlap_seconds", "atten_lim_db")
    settings = {name: getattr(config, name, None) for name in fields}
    settings["keep_level"] = getattr(config, "keep_level", True)
    settings["compat"] = getattr(config, "compat", None)
    settings["full_band"] = getattr(config, "full_band", True)
    settings["weights_sha256"] = weights_sha256(config.weights, config.model)
    return settings


def weights_sha256(weights: str | Path | None, arch: str) -> str | None:
    """sha256 of the weights a config names, without loading them (from the manifest when it is known)."""
    if weights is None:
        return None  # random weights (tests): nothing to identify
    from denoise_models import weights as store

    name = store.default_weights(arch) if str(weights) == "default" else str(weights)
    entry = store.manifest().get(name)
    if entry is not None:
        return entry.sha256
    path = Path(name).expanduser()
    return file_sha256(path) if path.is_file() else None


def _ends_torn(path: Path) -> bool:
    """True when ``path`` is non-empty and does not end with a newline (a row cut short by a crash)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except OSError:
        return False
