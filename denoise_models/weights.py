"""Pretrained weights: the manifest, where files are found, verified downloads, checkpoint formats.

Resolution order for a manifest name (first hit wins, every file is sha256-verified):

1. the local store: ``$DENOISE_WEIGHTS_DIR`` if set, else ``denoise_models/weights/`` beside this file
   (git-ignored; the Docker image bakes files in here), else ``~/.cache/speech-denoise/weights``;
2. mirrors listed in ``$DENOISE_WEIGHTS_MIRROR``: directories or http(s) base URLs, separated by spaces;
3. the upstream URLs of the manifest (skipped when ``$DENOISE_WEIGHTS_OFFLINE=1``).

A file found in a mirror or upstream is copied into the store (temp file, verify, atomic rename), so
the next call is local. A weights file is loaded with ``torch.load(weights_only=True)``: it can never
run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoise_models.atomic import atomic_output, atomic_write_bytes
from denoise_models.registry import architecture_class, build_model

MANIFEST_PATH = Path(__file__).with_name("weights.toml")
LOCAL_MANIFEST = "local.toml"
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded, verified or loaded. The message says what to do."""


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained model of the manifest (or one registered locally by fine-tuning)."""

    name: str
    arch: str
    file: str
    sha256: str
    size: int | None = None
    description: str = ""
    license: str = ""
    urls: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    local: bool = False

    @property
    def file_names(self) -> tuple[str, ...]:
        return (self.file, *self.aliases)


@dataclass
class Checkpoint:
    """What a weights file holds once unwrapped: a bare state dict plus what we know about it."""

    state_dict: dict[str, torch.Tensor]
    arch: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- manifest


def store_dir() -> Path:
    """The local store where fetched and fine-tuned weights live."""
    env = os.environ.get("DENOISE_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).with_name("weights")
    if os.access(beside if beside.exists() else beside.parent, os.W_OK):
        return beside
    return Path.home() / ".cache" / "speech-denoise" / "weights"


def _entry(name: str, raw: dict[str, Any], local: bool) -> WeightsEntry:
    return WeightsEntry(
        name=name,
        arch=raw["arch"],
        file=raw["file"],
        sha256=raw["sha256"].lower(),
        size=raw.get("size"),
        description=raw.get("description", ""),
        license=raw.get("license", ""),
        urls=tuple(raw.get("urls", ())),
        aliases=tuple(raw.get("aliases", ())),
        config=dict(raw.get("config", {})),
        local=local,
    )


def _read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        return tomllib.load(fh)


def manifest() -> dict[str, WeightsEntry]:
    """All known pretrained models: the shipped manifest plus the local store's ``local.toml``."""
    shipped = _read_toml(MANIFEST_PATH)
    entries = {name: _entry(name, raw, local=False) for name, raw in shipped["models"].items()}
    local_path = store_dir() / LOCAL_MANIFEST
    if local_path.is_file():
        for name, raw in _read_toml(local_path).get("models", {}).items():
            if name in entries and not entries[name].local:
                continue  # a local file never shadows a published identity
            entries[name] = _entry(name, raw, local=True)
    return entries


def default_weights(arch: str) -> str:
    """The manifest name used when the caller asks for ``weights="default"``."""
    defaults = _read_toml(MANIFEST_PATH)["defaults"]
    try:
        return defaults[arch.lower()]
    except KeyError:
        raise WeightsError(f"no default weights for architecture {arch!r}") from None


def arch_of(weights: str | Path) -> str | None:
    """The architecture a manifest name or checkpoint file belongs to, if it can be told."""
    entry = manifest().get(str(weights))
    if entry is not None:
        return entry.arch
    path = Path(weights)
    if path.is_file():
        return read_checkpoint(path).arch
    return None


# --------------------------------------------------------------------------- finding files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, entry: WeightsEntry) -> None:
    """Raise :class:`WeightsError` unless ``path`` has the manifest's size and sha256."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise WeightsError(f"{path}: size {size:,} bytes, expected {entry.size:,} for {entry.name}")
    actual = sha256_of(path)
    if actual != entry.sha256:
        raise WeightsError(f"{path}: sha256 {actual} does not match {entry.sha256} for {entry.name}")


def mirrors() -> list[str]:
    """Mirror locations from ``$DENOISE_WEIGHTS_MIRROR`` (space-separated dirs or http(s) base URLs)."""
    return os.environ.get("DENOISE_WEIGHTS_MIRROR", "").split()


def _candidates(entry: WeightsEntry) -> Iterator[str]:
    for mirror in mirrors():
        for name in entry.file_names:
            if mirror.startswith(("http://", "https://")):
                yield mirror.rstrip("/") + "/" + urllib.parse.quote(name)
            else:
                yield str(Path(mirror).expanduser() / name)
    if os.environ.get("DENOISE_WEIGHTS_OFFLINE", "") not in ("", "0"):
        return  # air-gapped: never try the internet (mirrors above may still be http on the LAN)
    yield from entry.urls


def _copy_verified(source: str, dest: Path, entry: WeightsEntry, progress: bool) -> None:
    """Copy/download ``source`` to a temp file beside ``dest``, verify it, then rename atomically."""
    with atomic_output(dest) as tmp:
        with open(tmp, "wb") as out:
            if source.startswith(("http://", "https://")):
                _download(source, out, entry, progress)
            else:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, out, _CHUNK)
        verify(tmp, entry)


def _download(url: str, out: Any, entry: WeightsEntry, progress: bool) -> None:
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "speech-denoise-workstation"})
    with urllib.request.urlopen(request, timeout=30) as response:
        total = int(response.headers.get("Content-Length") or 0) or entry.size
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=entry.file, disable=not progress, leave=False
        ) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))


def fetch(name: str, *, progress: bool = True) -> Path:
    """Make manifest entry ``name`` present and verified in the local store; return its path.

    Raises:
        WeightsError: unknown name, or no place had a file with the right sha256 (every place tried
            is listed, with what went wrong there).
    """
    entries = manifest()
    if name not in entries:
        known = ", ".join(sorted(entries))
        raise WeightsError(f"unknown weights {name!r}; known: {known}")
    entry = entries[name]
    dest = store_dir() / entry.file
    tried: list[str] = []
    if dest.is_file():
        try:
            _verify_cached(dest, entry)
            return dest
        except WeightsError as err:
            tried.append(f"local store: {err}")
    if entry.local:
        raise WeightsError(_failure_message(entry, tried or [f"local store: {dest} is missing"]))
    for source in _candidates(entry):
        try:
            if not source.startswith(("http://", "https://")) and not Path(source).is_file():
                tried.append(f"{source}: no such file")
                continue
            _copy_verified(source, dest, entry, progress)
            _mark_verified(dest)
            return dest
        except (urllib.error.URLError, OSError, WeightsError, ValueError) as err:
            tried.append(f"{source}: {getattr(err, 'reason', None) or err}")
    raise WeightsError(_failure_message(entry, tried))


def _failure_message(entry: WeightsEntry, tried: list[str]) -> str:
    lines = [f"weights {entry.name!r} ({entry.file}, sha256 {entry.sha256[:12]}…) are not available."]
    lines += ["Tried:"] + [f"  - {t}" for t in tried]
    lines += [
        "Fixes:",
        f"  - put the file in {store_dir()} (it is checked by sha256), or",
        "  - set DENOISE_WEIGHTS_MIRROR to a directory or http(s) URL that holds it, then run"
        f" `denoise fetch-weights {entry.name}`, or",
        "  - pass an explicit file with --weights PATH, or use the light model: --model gtcrn",
    ]
    return "\n".join(lines)


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _mark_verified(path: Path) -> None:
    st = path.stat()
    _stamp(path).write_text(f"{st.st_size} {st.st_mtime_ns}\n")


def _verify_cached(path: Path, entry: WeightsEntry) -> None:
    """Verify once per file version: hashing 58 MB on every run would cost more than the stamp."""
    st = path.stat()
    stamp = _stamp(path)
    if stamp.is_file() and stamp.read_text().strip() == f"{st.st_size} {st.st_mtime_ns}":
        return
    verify(path, entry)
    with contextlib.suppress(OSError):  # read-only store: verified now, verified again next time
        _mark_verified(path)


def resolve_weights(weights: str | Path, *, progress: bool = True) -> Path:
    """A manifest name or a file path -> a verified local file path.

    An existing file path is used as given (the user chose it); anything else must be a manifest
    name and goes through :func:`fetch`.
    """
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if str(weights) in manifest():
        return fetch(str(weights), progress=progress)
    if path.suffix or os.sep in str(weights):
        raise WeightsError(f"weights file {path} does not exist")
    known = ", ".join(sorted(manifest()))
    raise WeightsError(f"{weights!r} is neither a file nor a known weights name; known: {known}")


# --------------------------------------------------------------------------- checkpoint formats


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported checkpoint safely and unwrap it to a bare state dict.

    Supported: the released FRCRN file (bare state dict), ModelScope trainer checkpoints
    (``{'state_dict': {'model.…'}}``), GTCRN's ``{'model': …}``, DDP ``module.`` prefixes and our own
    format (``{'arch', 'config', 'state_dict', 'meta'}``).
    """
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a safe checkpoint
        raise WeightsError(f"{path}: not a loadable weights file ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    arch, config, meta = obj.get("arch"), dict(obj.get("config") or {}), dict(obj.get("meta") or {})
    state = obj
    for key in ("state_dict", "model"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    for prefix in ("module.", "model."):
        state = _strip_prefix(state, prefix)
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors")
    return Checkpoint(tensors, arch if isinstance(arch, str) else None, config, meta)


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The bare state dict of any supported checkpoint (see :func:`read_checkpoint`)."""
    return read_checkpoint(path).state_dict


@dataclass
class LoadReport:
    """What happened when a checkpoint was loaded into a network."""

    path: Path
    missing: list[str]
    unexpected: list[str]
    notes: list[str]


def load_state_dict_into(net: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load checkpoint ``path`` into ``net`` after mapping the architecture's key spellings.

    Raises:
        WeightsError: shapes do not fit, or (``strict``) keys are missing or unexpected; the message
            names them.
    """
    path = Path(path)
    state = read_checkpoint(path).state_dict
    remap = getattr(type(net), "remap_state_dict", None)
    notes: list[str] = []
    if remap is not None:
        try:
            state, notes = remap(state)
        except ValueError as err:
            raise WeightsError(f"{path}: {err}") from err
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise WeightsError(f"{path} does not fit {type(net).__name__}: {err}") from err
    report = LoadReport(path, list(result.missing_keys), list(result.unexpected_keys), notes)
    if strict and (report.missing or report.unexpected):
        raise WeightsError(_key_report(path, net, report))
    return report


def _key_report(path: Path, net: nn.Module, report: LoadReport) -> str:
    def listing(keys: list[str]) -> str:
        shown = ", ".join(keys[:8])
        return shown + (f", … ({len(keys)} in all)" if len(keys) > 8 else "")

    parts = [f"{path} does not fit {type(net).__name__}:"]
    if report.missing:
        parts.append(f"  missing keys: {listing(report.missing)}")
    if report.unexpected:
        parts.append(f"  unexpected keys: {listing(report.unexpected)}")
    return "\n".join(parts)


def model_from_checkpoint(
    arch: str, path: str | Path, *, strict: bool = True, config: dict[str, Any] | None = None
) -> nn.Module:
    """Build ``arch`` with the checkpoint's own config (ours records it) and load the weights."""
    ckpt = read_checkpoint(path)
    if ckpt.arch is not None and ckpt.arch != arch:
        raise WeightsError(f"{path} holds a {ckpt.arch!r} model, not {arch!r}")
    net = build_model(arch, **{**(config or {}), **ckpt.config})
    load_state_dict_into(net, path, strict=strict)
    return net


def save_checkpoint(path: str | Path, net: nn.Module, arch: str, meta: dict[str, Any] | None = None) -> Path:
    """Write ``net`` in our checkpoint format, atomically. ``load_model(arch, path)`` reads it back."""
    path = Path(path)
    architecture_class(arch)  # refuse an unknown architecture before writing anything
    payload = {
        "arch": arch,
        "config": dict(getattr(net, "config", {}) or {}),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
    }
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, then rename: readers never see half a file."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def register_local(name: str, arch: str, path: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Copy checkpoint ``path`` into the local store under ``name`` and record it in ``local.toml``.

    Afterwards ``load_model(arch, weights=name)`` and ``1键推理.py --weights name`` find it.
    Published names cannot be overwritten.
    """
    if not name.replace("_", "").replace("-", "").isalnum():
        raise WeightsError(f"invalid weights name {name!r}: use letters, digits, '-' and '_'")
    existing = manifest().get(name)
    if existing is not None and not existing.local:
        raise WeightsError(f"{name!r} is a published model name; choose another")
    architecture_class(arch)
    store = store_dir()
    store.mkdir(parents=True, exist_ok=True)
    dest = store / f"{name}.pt"
    if Path(path).resolve() != dest.resolve():
        with atomic_output(dest) as tmp:
            shutil.copyfile(path, tmp)
    local_path = store / LOCAL_MANIFEST
    entries = _read_toml(local_path).get("models", {}) if local_path.is_file() else {}
    entries[name] = {
        "arch": arch,
        "file": dest.name,
        "sha256": sha256_of(dest),
        "size": dest.stat().st_size,
        "description": str((meta or {}).get("description", "fine-tuned locally")),
        "license": "local",
    }
    lines = ["# Weights registered on this machine (written by `denoise finetune`).", ""]
    for entry_name, raw in sorted(entries.items()):
        lines.append(f"[models.{entry_name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in raw.items() if not isinstance(v, dict | list)]
        lines.append("")
    atomic_write_bytes(local_path, "\n".join(lines).encode())
    _mark_verified(dest)
    return dest
