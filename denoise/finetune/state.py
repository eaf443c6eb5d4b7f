"""The bookkeeping of a run: its progress (saved in ``last.pt``), its result, and what it tells the user."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from denoise.finetune.config import FinetuneConfig
from denoise.finetune.validation import Scores

# Config keys that may change between the sessions of one run without a warning.
_FREE_KEYS = {
    "optim.epochs",
    "optim.max_steps",
    "output.progress",
    "output.register_as",
    "device",
    "data.num_workers",
    "output.tensorboard",
    "threads",
}


@dataclass
class Progress:
    """Where a run stands; everything here is saved in ``last.pt`` and restored on resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    bad_epochs: int = 0
    nonfinite_steps: int = 0
    finished: bool = False
    noisy: Scores = field(default_factory=lambda: Scores(float("nan")))  # the unprocessed inputs
    baseline: Scores = field(default_factory=lambda: Scores(float("nan")))  # the starting checkpoint
    best: Scores = field(default_factory=lambda: Scores(float("nan")))
    best_epoch: int = 0  # 0 = the starting checkpoint
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per validation

    def to_state(self) -> dict[str, Any]:
        plain = {k: v for k, v in vars(self).items() if not isinstance(v, Scores)}
        return {**plain, **{k: v.as_dict() for k, v in vars(self).items() if isinstance(v, Scores)}}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        progress = cls()
        for key, value in vars(progress).items():
            setattr(
                progress, key, Scores(**state[key]) if isinstance(value, Scores) else state.get(key, value)
            )
        return progress


@dataclass
class FinetuneResult:
    """What a run achieved; also written to ``summary.json``."""

    run_dir: Path
    baseline: Scores  # the starting checkpoint on the validation set
    best: Scores  # the exported model on the validation set (== baseline when not improved)
    best_epoch: int  # 0 = the starting checkpoint
    improved: bool
    steps: int
    best_path: Path
    noisy: Scores | None = None  # the unprocessed validation inputs
    registered_as: str | None = None
    interrupted: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def best_finetuned(self) -> float:
        """The best validation SI-SNR of any fine-tuned weights (NaN before the first validation)."""
        scores = [row["val_si_snr"] for row in self.history if row["epoch"] > 0 or row["step"] > 0]
        return max(scores) if scores else float("nan")

    def summary(self, cfg: FinetuneConfig, world_size: int, progress: Progress) -> dict[str, Any]:
        return {
            "arch": cfg.model.arch,
            "start_weights": str(cfg.model.weights),
            "steps": self.steps,
            "world_size": world_size,
            "improved": self.improved,
            "best_epoch": self.best_epoch,
            "noisy": self.noisy.as_dict() if self.noisy else None,
            "baseline": self.baseline.as_dict(),
            "best": self.best.as_dict(),
            "registered_as": self.registered_as,
            "best_path": str(self.best_path),
            "nonfinite_steps": progress.nonfinite_steps,
        }


def finish_message(result: FinetuneResult, *, register_anyway: bool) -> str:
    """What the user reads at the end: the gain, or a loud note that the original weights were kept."""
    if result.improved:
        return (
            f"fine-tuning improved on the starting checkpoint (epoch {result.best_epoch}):\n"
            f"  before: validation {result.baseline}\n  after:  validation {result.best}"
        )
    bar = "!" * 78
    return (
        f"\n{bar}\n!! Fine-tuning did NOT improve on the starting checkpoint.\n"
        f"!!   starting checkpoint: validation SI-SNR {result.baseline.si_snr:.2f} dB\n"
        f"!!   best fine-tuned:     {result.best_finetuned():.2f} dB\n"
        f'!! best.pt is the ORIGINAL weights. Try a lower optim.lr, freeze = "backbone", more\n'
        f'!! (or more varied) data, or loss.kind = "native".\n'
        + (
            "!! It is registered anyway (output.register_if_not_improved = true).\n"
            if register_anyway
            else "!! Nothing was registered in the weights store.\n"
        )
        + bar
    )


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys that differ between two config dicts, ignoring ones that may change between sessions."""
    changes = []
    for section, values in new.items():
        if isinstance(values, dict):
            for key, value in values.items():
                name = f"{section}.{key}"
                if name not in _FREE_KEYS and old.get(section, {}).get(key) != value:
                    changes.append(name)
        elif section not in _FREE_KEYS and old.get(section) != values:
            changes.append(section)
    return changes


def best_checkpoint_meta(
    cfg: FinetuneConfig, progress: Progress, run_name: str, *, original: bool
) -> dict[str, Any]:
    """What ``best.pt`` records about itself (``original``: the starting weights, kept as the bar)."""
    p, arch, start = progress, cfg.model.arch, cfg.model.weights
    description = (
        f"{arch} {start} unchanged: fine-tuning run {run_name} did not improve on it"
        if original
        else f"{arch} fine-tuned from {start} ({run_name}): val SI-SNR {p.baseline.si_snr:.2f} -> "
        f"{p.best.si_snr:.2f} dB"
    )
    return {
        "base_weights": str(start), "fine_tuned": not original, "epoch": p.best_epoch, "step": p.step,
        "val_si_snr": p.best.si_snr, "val_pesq": p.best.pesq, "baseline_si_snr": p.baseline.si_snr,
        "baseline_pesq": p.baseline.pesq, "description": description,
    }  # fmt: skip


def default_register_name(cfg: FinetuneConfig) -> str:
    """``<arch>_ft_<run folder name>``, reduced to characters a weights name may hold."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(cfg.output.run_dir).resolve().name).strip("_") or "run"
    return f"{cfg.model.arch}_ft_{stem}"
