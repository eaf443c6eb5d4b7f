"""The one typed configuration of ``denoise finetune``: dataclasses read from a TOML file.

Every field has a documented default (``configs/finetune_gtcrn.toml`` and ``configs/finetune_frcrn.toml``
spell them out). Unknown keys are errors, not silently ignored, so a typo cannot train with a default
you did not mean. Relative paths are taken relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from denoise_models.spec import SPECS

ARCHS = tuple(SPECS)
AMP_DTYPES = ("auto", "bf16", "fp16")
FREEZE_POLICIES = ("none", "encoders", "backbone")
# A network's own loss needs that network's outputs: loss kind -> the architecture it belongs to.
NATIVE_LOSSES = {spec.native_loss: spec.name for spec in SPECS.values()}
LOSSES = ("native", *NATIVE_LOSSES, "composite", "si_snr")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what is allowed."""


@dataclass
class ModelConfig:
    """What to start from and what may change."""

    arch: str = "gtcrn"  # "frcrn" or "gtcrn"
    # Starting weights: a registered name (`denoise fetch-weights --list`: frcrn_official, gtcrn_dns3,
    # gtcrn_dns3_stream, gtcrn_vctk, or one of your own fine-tunes) or a checkpoint file.
    weights: str = "default"
    # none: train everything; encoders: freeze the encoders (FRCRN: encoders + their FSMN/SE of both
    # UNets; GTCRN: ERB/SFE front end + encoder); backbone: freeze everything except the mask-producing
    # layers (FRCRN: decoders, their FSMN/SE and the 1x1 output conv of both UNets; GTCRN: decoder).
    freeze: str = "none"
    # Keep BatchNorm running statistics as pretrained (BN layers stay in eval mode). Small fine-tuning
    # batches of one noise type would otherwise overwrite statistics learnt on thousands of hours.
    freeze_batchnorm: bool = True


@dataclass
class DataConfig:
    """Where training audio comes from. All audio is mixed to mono and resampled to 16 kHz."""

    # "mix": clean speech + noise mixed on the fly; "paired": noisy/clean files matched by name.
    kind: str = "mix"
    clean_dir: str = "../shared/audio/clean_speech"  # clean speech (both kinds)
    noise_dir: str = "../shared/audio/noise"  # noise recordings (mix)
    # Optional subset of noise files: names (or glob patterns) relative to noise_dir; empty = all.
    noise_files: list[str] = field(default_factory=list)
    rir_dir: str = ""  # optional room impulse responses (mix); empty = none
    rir_probability: float = 0.0  # fraction of mixtures whose speech is reverberated
    noisy_dir: str = ""  # noisy files (paired); matched to clean_dir by relative path, then by name
    val_noisy_dir: str = ""  # optional separate validation pairs (paired); else val_fraction is held out
    val_clean_dir: str = ""
    segment_seconds: float = 2.0  # training segment length (rounded up to the network's hop)
    snr_db: list[float] = field(default_factory=lambda: [-5.0, 20.0])  # uniform SNR range (mix)
    level_dbfs: list[float] = field(default_factory=lambda: [-35.0, -15.0])  # mixture RMS range (random gain)
    items_per_epoch: int = 2000  # mixtures (or segments of pairs) per epoch
    val_fraction: float = 0.2  # clean files (and the tail of every noise file) held out for validation
    val_items: int = 32  # fixed validation mixtures, the same every epoch
    val_segment_seconds: float = 4.0
    num_workers: int = 2  # DataLoader worker processes (0 = load in the main process)


@dataclass
class LossConfig:
    """The training objective (see ``denoise/finetune/losses.py``)."""

    # native: the network's own training loss (FRCRN: ModelScope "Mix"; GTCRN: its HybridLoss) - the
    # safest choice for fine-tuning, because the checkpoint sits at an optimum of exactly that loss.
    # composite: alpha * LogMag + beta * cIRM + gamma * (-SI-SNR); si_snr: -SI-SNR only.
    kind: str = "native"
    alpha: float = 1.0
    beta: float = 0.5
    gamma: float = 0.3


@dataclass
class OptimConfig:
    """Optimiser, schedule and stopping."""

    lr: float = 1e-4  # 10x below ModelScope's 1e-3 from-scratch rate: fine-tuning, not re-training
    weight_decay: float = 1e-5
    grad_clip: float = 10.0  # max global grad norm (ModelScope: 10)
    batch_size: int = 8  # per process
    epochs: int = 20
    max_steps: int = 0  # stop after this many optimiser steps in total (0 = no limit)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    # auto: bf16 where the GPU supports it (Ampere and later), else fp16 with a gradient scaler.
    amp_dtype: str = "auto"
    # ReduceLROnPlateau on validation SI-SNR; ModelScope uses factor 0.98, patience 2 over 200 epochs,
    # far gentler than a short fine-tune needs.
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    early_stop_patience: int = 5  # epochs without a new best before stopping (0 = never)
    min_improvement_db: float = 0.05  # SI-SNR gain over the best so far that counts as better


@dataclass
class OutputConfig:
    """Run folder, checkpoints, export."""

    run_dir: str = "runs/finetune"
    checkpoint_every: int = 200  # steps between resume checkpoints: a crash loses at most this many
    register: bool = True  # register the exported model in the local weights store
    register_as: str = ""  # name in the local weights store; empty = "<arch>_ft_<run folder name>"
    # Register even when fine-tuning did not beat the starting checkpoint (the exported file is then
    # the starting checkpoint itself, so nothing worse can be installed by accident).
    register_if_not_improved: bool = False
    pesq_items: int = 4  # validation mixtures also scored with PESQ-WB each epoch (slow: keep small)
    tensorboard: bool = True
    progress: bool = True  # tqdm bar with loss and ETA


@dataclass
class FinetuneConfig:
    """Everything ``denoise finetune`` needs; ``FinetuneConfig.load(path)`` reads it from TOML."""

    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    # CPU threads per process for torch (0 = torch's default: all cores). On a shared or busy CPU, 1
    # is often several times faster than oversubscribing; torchrun already sets 1 per process.
    threads: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def load(cls, path: str | Path) -> FinetuneConfig:
        """Read and validate a TOML config; missing keys take the defaults above."""
        path = Path(path)
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from err
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FinetuneConfig:
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def override(self, dotted: str) -> None:
        """Apply one ``section.key=value`` override (value parsed as TOML, else taken as a string)."""
        key, sep, text = dotted.partition("=")
        if not sep:
            raise ConfigError(f"override {dotted!r} must look like section.key=value")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        self.set(key.strip(), value)

    def set(self, key: str, value: Any) -> None:
        """Set ``section.key`` (or a top-level key) to ``value``, type-checked and validated.

        A rejected value leaves the config unchanged.
        """
        *sections, name = key.split(".")
        target: Any = self
        for section in sections:
            if not dataclasses.is_dataclass(getattr(target, section, None)):
                raise ConfigError(f"unknown config section {section!r} in {key!r}")
            target = getattr(target, section)
        if name not in {f.name for f in dataclasses.fields(target)} or dataclasses.is_dataclass(
            getattr(target, name)
        ):
            raise ConfigError(f"unknown config key {key!r}")
        previous = getattr(target, name)
        setattr(target, name, _coerce(get_type_hints(type(target))[name], value, key))
        try:
            self.validate()
        except ConfigError:
            setattr(target, name, previous)
            raise

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        m, d, o, out = self.model, self.data, self.optim, self.output
        _choice("model.arch", m.arch, ARCHS)
        _choice("model.freeze", m.freeze, FREEZE_POLICIES)
        _choice("data.kind", d.kind, ("mix", "paired"))
        _choice("loss.kind", self.loss.kind, LOSSES)
        _choice("optim.amp_dtype", o.amp_dtype, AMP_DTYPES)
        owner = NATIVE_LOSSES.get(self.loss.kind, m.arch)
        if owner != m.arch:
            raise ConfigError(
                f"loss.kind {self.loss.kind!r} is {owner.upper()}'s own loss; use model.arch = {owner!r}"
            )
        for name, pair in (("data.snr_db", d.snr_db), ("data.level_dbfs", d.level_dbfs)):
            if len(pair) != 2 or pair[0] > pair[1]:
                raise ConfigError(f"{name} must be [low, high] with low <= high, got {pair}")
        if not 0.0 <= d.rir_probability <= 1.0:
            raise ConfigError(f"data.rir_probability must be in [0, 1], got {d.rir_probability}")
        if not 0.0 < d.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
        positive = {
            "data.segment_seconds": d.segment_seconds,
            "data.val_segment_seconds": d.val_segment_seconds,
            "data.items_per_epoch": d.items_per_epoch,
            "data.val_items": d.val_items,
            "optim.lr": o.lr,
            "optim.batch_size": o.batch_size,
            "optim.epochs": o.epochs,
            "output.checkpoint_every": out.checkpoint_every,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        for name, value in {
            "optim.max_steps": o.max_steps,
            "data.num_workers": d.num_workers,
            "output.pesq_items": out.pesq_items,
            "threads": self.threads,
        }.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not 0.0 < o.plateau_factor <= 1.0:
            raise ConfigError(f"optim.plateau_factor must be in (0, 1], got {o.plateau_factor}")
        if d.kind == "mix" and not (d.clean_dir and d.noise_dir):
            raise ConfigError("data.kind 'mix' needs data.clean_dir and data.noise_dir")
        if d.kind == "paired" and not (d.clean_dir and d.noisy_dir):
            raise ConfigError("data.kind 'paired' needs data.noisy_dir and data.clean_dir")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} = {value!r}; allowed: {', '.join(allowed)}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{prefix.rstrip('.')}] must be a table")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, prefix + name)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check ``value`` against a field's type; ints are accepted where floats are expected."""
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if getattr(hint, "__origin__", None) is list and isinstance(value, list):
        (inner,) = hint.__args__
        return [_coerce(inner, v, key) for v in value]
    raise ConfigError(f"{key} = {value!r}: expected {getattr(hint, '__name__', hint)}")
