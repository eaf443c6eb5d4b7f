"""What a run leaves behind for people: ``steps.csv``, ``epochs.csv``, TensorBoard, ``loss_curve.png``, JSON.

Only rank 0 logs. CSV rows are appended as they happen (a log, readable while the run goes on); every
file replaced whole (plots, JSON, a CSV cut back on resume) goes through the one atomic writer.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from denoise_models.atomic import atomic_output

STEPS_CSV, EPOCHS_CSV, PLOT = "steps.csv", "epochs.csv", "loss_curve.png"


def json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def write_json(path: Path, value: dict[str, Any]) -> Path:
    """``value`` as indented strict JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(json_safe(value), indent=2) + "\n")
    return path


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def truncate_csv(path: Path, upto_step: int) -> None:
    """Drop rows logged after step ``upto_step`` (they belong to steps a resumed run will redo)."""
    rows = read_csv(path)
    if not rows or all(int(float(r["step"])) <= upto_step for r in rows):
        return
    with atomic_output(path) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if int(float(r["step"])) <= upto_step)


class RunLog:
    """The run folder's logs; every method is a no-op on ranks other than 0 (``enabled=False``)."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self.tensorboard = tensorboard and enabled
        self.writer: Any = None  # SummaryWriter while open

    def open(self, step: int) -> str | None:
        """Start logging at ``step`` (0, or where a resumed run continues); returns a note for the user."""
        if not self.enabled:
            return None
        truncate_csv(self.run_dir / STEPS_CSV, step)
        truncate_csv(self.run_dir / EPOCHS_CSV, step)
        if not self.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return "TensorBoard is not installed: logging to CSV only"
        self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=step or None)
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def step(self, row: dict[str, Any], terms: dict[str, float]) -> None:
        """One optimiser step: ``row`` (step, epoch, lr, …) plus the loss ``terms``."""
        if not self.enabled:
            return
        append_csv(self.run_dir / STEPS_CSV, {**row, **terms})
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f"train/{key}", value, row["step"])
            self.writer.add_scalar("train/lr", row["lr"], row["step"])

    def epoch(self, row: dict[str, Any]) -> None:
        """One validation: a row of ``epochs.csv`` and a fresh ``loss_curve.png``."""
        if not self.enabled:
            return
        append_csv(self.run_dir / EPOCHS_CSV, row)
        if self.writer is not None:
            for key in ("val_si_snr", "val_pesq"):
                if math.isfinite(row[key]):
                    self.writer.add_scalar(key.replace("_", "/", 1), row[key], row["step"])
            self.writer.flush()
        plot_curves(self.run_dir)


def plot_curves(run_dir: str | Path) -> Path | None:
    """``loss_curve.png``: training loss per step (raw + smoothed) and validation SI-SNR per epoch."""
    run_dir = Path(run_dir)
    steps, epochs = read_csv(run_dir / STEPS_CSV), read_csv(run_dir / EPOCHS_CSV)
    if not epochs:
        return None
    from matplotlib.figure import Figure  # not pyplot: no global backend switch inside notebooks

    fig = Figure(figsize=(8, 6))
    ax_loss, ax_val = fig.subplots(2, 1, sharex=True)
    if steps:
        x = np.array([int(r["step"]) for r in steps])
        y = np.array([float(r["loss"]) for r in steps])
        ax_loss.plot(x, y, color="0.75", linewidth=0.8, label="loss")
        if len(y) > 5:
            k = max(5, len(y) // 30)
            ax_loss.plot(x[k - 1 :], np.convolve(y, np.ones(k) / k, "valid"), label=f"mean of {k}")
        ax_loss.legend(loc="upper right")
    ax_loss.set_ylabel("training loss")
    ax_loss.grid(alpha=0.3)
    vx = [int(r["step"]) for r in epochs]
    vy = [float(r["val_si_snr"]) for r in epochs]
    ax_val.plot(vx, vy, "o-", label="validation SI-SNR")
    ax_val.axhline(vy[0], color="tab:red", linestyle="--", label=f"starting checkpoint ({vy[0]:.2f} dB)")
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("SI-SNR (dB)")
    ax_val.grid(alpha=0.3)
    ax_val.legend(loc="lower right")
    fig.tight_layout()
    out = run_dir / PLOT
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return out
