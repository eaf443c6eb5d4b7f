"""Where a corpus lives: local paths or fsspec URLs (``s3://``, ``gs://``, ...), listed, fetched and published.

Inputs are a folder, a glob, one file, or a manifest (CSV / JSONL / Parquet with a ``path`` column).
Outputs mirror each input's place below the input's base. Local outputs are written by the engine
through the one atomic writer; remote outputs are uploaded from a complete local file with one
``put_file`` (an S3 object appears whole or not at all, so no partial key is ever visible).
"""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from denoise.audio import is_audio_path

INPUT_MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


class CorpusError(RuntimeError):
    """The corpus cannot be listed or written (nothing was processed). Exit status 2."""


def filesystem(url: str, storage_options: dict[str, Any]) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for a local path or URL."""
    from fsspec.core import url_to_fs

    return url_to_fs(url, **storage_options)


def is_local(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def full_url(fs: Any, path: str) -> str:
    """What a row calls a file: the absolute path if local, else ``protocol://path``."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


@dataclass(frozen=True)
class CorpusInput:
    """One input file as the driver lists it."""

    input: str  # absolute path or URL: the manifest's key
    rel: str  # its place below the input base (posix), mirrored below the output base
    input_size: int
    input_mtime_ns: int


def _mtime_ns(info: dict[str, Any]) -> int:
    """Modification time (ns) from an fsspec ``info`` dict (local ``mtime``, S3 ``LastModified``)."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified", info.get("updated"))))
    if hasattr(value, "timestamp"):
        value = value.timestamp()
    try:
        return round(float(value) * 1e9)
    except (TypeError, ValueError):
        return 0


def _has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def list_inputs(
    spec: str, storage_options: dict[str, Any], *, exclude: str | None = None
) -> list[CorpusInput]:
    """Audio files named by ``spec`` (folder, glob, file or input manifest), sorted by path.

    ``exclude`` (a URL or path) leaves out everything below it, e.g. an output folder inside the input.
    """
    fs, path = filesystem(spec, storage_options)
    if _has_magic(path):
        base = path[: min(path.index(c) for c in "*?[" if c in path)].rpartition("/")[0]
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif path.lower().endswith(INPUT_MANIFEST_SUFFIXES) and fs.isfile(path):
        return _list_manifest(fs, path, storage_options)
    elif fs.isdir(path):
        base = path.rstrip("/")
        paths = [p for p in fs.find(path) if is_audio_path(Path(p))]
    elif fs.isfile(path):
        base, paths = posixpath.dirname(path), [path]
    else:
        raise CorpusError(f"input {spec} is neither a folder, a glob, an audio file nor a manifest")
    skip = filesystem(exclude, storage_options)[1].rstrip("/") + "/" if exclude else None
    paths = sorted(p for p in paths if not (skip and p.startswith(skip)) and not _hidden(p, base))
    return [_describe(fs, p, posixpath.relpath(p, base) if base else p.lstrip("/")) for p in paths]


def _hidden(path: str, base: str) -> bool:
    """Files in dot-folders (and dot-files) are left out, as the single-machine runner does."""
    rel = posixpath.relpath(path, base) if base else path
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def _describe(fs: Any, path: str, rel: str) -> CorpusInput:
    info = fs.info(path)
    return CorpusInput(full_url(fs, path), rel, int(info.get("size") or 0), _mtime_ns(info))


def _list_manifest(fs: Any, path: str, storage_options: dict[str, Any]) -> list[CorpusInput]:
    """Inputs from a CSV / JSONL / Parquet table with a ``path`` column (relative paths: beside the table)."""
    import pyarrow.csv
    import pyarrow.json
    import pyarrow.parquet

    readers = {".csv": pyarrow.csv.read_csv, ".parquet": pyarrow.parquet.read_table}
    reader = readers.get(Path(path).suffix.lower(), pyarrow.json.read_json)
    with fs.open(path, "rb") as f:
        table = reader(f)
    if "path" not in table.column_names:
        raise CorpusError(
            f"input manifest {path} has no 'path' column (columns: {', '.join(table.column_names)})"
        )
    folder = posixpath.dirname(path)
    urls = []
    for value in table.column("path").to_pylist():
        if not value:
            continue
        absolute = "://" in value or value.startswith("/")
        urls.append(value if absolute else full_url(fs, posixpath.join(folder, value)))
    located = [filesystem(url, storage_options) for url in urls]
    common = posixpath.commonpath([p for _, p in located]) if len(located) > 1 else None
    base = common if common is not None else posixpath.dirname(located[0][1]) if located else ""
    items = [_describe(f, p, posixpath.relpath(p, base)) for f, p in located]
    return sorted(items, key=lambda item: item.input)


def target_for(output: str, rel: str, suffix: str | None) -> str:
    """The output path or URL mirroring ``rel`` below ``output`` (extension replaced by ``suffix``)."""
    rel_path = PurePosixPath(rel)
    if suffix:
        rel_path = rel_path.with_suffix(suffix)
    return output.rstrip("/") + "/" + str(rel_path)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_intact(url: str, row: dict[str, Any], storage_options: dict[str, Any]) -> bool:
    """True when the output a ``done`` row describes is still there, whole.

    Local files are checked by size and sha256 (a power cut or a tool may have truncated one); objects
    in object storage by size (they are written whole or not at all; hashing would download them).
    """
    fs, path = filesystem(url, storage_options)
    try:
        size = int(fs.info(path).get("size") or 0)
    except (FileNotFoundError, OSError):
        return False
    if size != row.get("output_size") or size == 0:
        return False
    return not is_local(fs) or sha256_file(path) == row.get("output_sha256")
