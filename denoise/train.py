"""Fine-tuning FRCRN / GTCRN on your own noise, safely.

What "safely" means here
- The starting checkpoint is scored on the held-out validation mixtures before the first step; that
  score is the bar. ``best.pt`` starts as the original weights and is only replaced by a checkpoint
  that beats the bar, so a fine-tune that makes things worse ends with the original, and says so.
- The default objective is the network's own training loss, the learning rate is 10x below the
  from-scratch rate and BatchNorm statistics stay as pretrained: the three usual ways a fine-tune
  ends below its checkpoint.
- ``last.pt`` (model, optimiser, scheduler, AMP scaler, data position) is written every
  ``checkpoint_every`` steps and on Ctrl-C; running the same command again resumes. Data items are
  pure functions of ``(seed, epoch, index)``, so a resumed run computes exactly what an uninterrupted
  one would have.

Run folder: ``config.json``, ``steps.csv``, ``epochs.csv``, ``loss_curve.png``, ``tb/`` (TensorBoard),
``last.pt`` (resume state), ``best.pt`` (our checkpoint format, readable by ``model.load_model``) and
``summary.json``. The best model is registered in the local weights store, so
``python 1键推理.py --weights <name>`` uses it at once.

Distributed: the same entry point under ``torchrun`` (DistributedDataParallel, NCCL on CUDA, gloo on
CPU); rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from denoise import losses as L
from denoise.data import (
    MixingDataset,
    PairedDataset,
    ResumableSampler,
    index_audio,
    list_audio,
    match_pairs,
    segment_length,
    split_files,
)
from denoise.train_config import FinetuneConfig
from denoise_models.weights import atomic_torch_save

log = logging.getLogger(__name__)

STATE_VERSION = 1


# ------------------------------------------------------------------------------ architectures


@dataclass(frozen=True)
class ArchSpec:
    """What the trainer must know about a network: framing and which parameters belong where."""

    hop: int  # segment lengths are multiples of this (FRCRN returns exactly T samples then)
    encoders: str  # regex on parameter names: the encoder side (frozen by freeze = "encoders")
    mask_layers: str  # regex: the layers that produce the mask (the only ones trained by "backbone")
    fixed: str  # regex: never trained (STFT kernels, ERB filterbanks)


ARCH_SPECS: dict[str, ArchSpec] = {
    "frcrn": ArchSpec(
        hop=320,
        encoders=r"^unet2?\.(encoders|fsmn_enc|se_layers_enc)\.",
        mask_layers=r"^unet2?\.(decoders|fsmn_dec|se_layers_dec|linear)\.",
        fixed=r"^i?stft\.",
    ),
    "gtcrn": ArchSpec(
        hop=256,
        encoders=r"^(erb|sfe|encoder)\.",
        mask_layers=r"^decoder\.",
        fixed=r"^erb\.",
    ),
}


def apply_freeze(net: nn.Module, arch: str, policy: str) -> tuple[int, int]:
    """Set ``requires_grad`` by freeze policy; returns ``(trainable, total)`` parameter counts.

    ``none``: everything except fixed transforms; ``encoders``: also the encoder side;
    ``backbone``: only the mask-producing layers (see :data:`ARCH_SPECS`).
    """
    spec = ARCH_SPECS[arch]
    total = trainable = 0
    for name, param in net.named_parameters():
        frozen = {
            "none": False,
            "encoders": bool(re.match(spec.encoders, name)),
            "backbone": not re.match(spec.mask_layers, name),
        }[policy]
        train = not frozen and not re.match(spec.fixed, name)
        param.requires_grad_(train)
        total += param.numel()
        trainable += param.numel() if train else 0
    return trainable, total


def set_train_mode(net: nn.Module, *, freeze_batchnorm: bool) -> None:
    """``net.train()``, then BatchNorm layers back to eval where their statistics must not move.

    BN statistics stay frozen with ``freeze_batchnorm``, and always in a module whose parameters are
    all frozen (a frozen layer should not drift through its running averages either).
    """
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            frozen = not any(p.requires_grad for p in module.parameters())
            if freeze_batchnorm or frozen:
                module.eval()


class LossModule(nn.Module):
    """Network + objective in one module, so that DistributedDataParallel sees one forward pass.

    ``forward(noisy [B, T], clean [B, T]) -> dict`` of loss terms (``"loss"`` is minimised). The network
    runs under autocast when ``amp``; losses are computed in float32.
    """

    def __init__(
        self,
        net: nn.Module,
        arch: str,
        loss_kind: str,
        weights: tuple[float, float, float],
        *,
        amp: bool = False,
    ) -> None:
        super().__init__()
        self.net, self.arch, self.amp = net, arch, amp
        self.kind = (
            {"frcrn": "frcrn_mix", "gtcrn": "gtcrn_hybrid"}[arch] if loss_kind == "native" else loss_kind
        )
        self.alpha, self.beta, self.gamma = weights
        self._mask: Tensor | None = None
        if arch == "gtcrn":  # GTCRN applies its mask inside forward_spec: catch it on the way in
            net.mask.register_forward_pre_hook(self._catch_mask)

    def _catch_mask(self, _module: nn.Module, args: tuple[Tensor, ...]) -> None:
        self._mask = args[0]

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def forward(self, noisy: Tensor, clean: Tensor) -> dict[str, Tensor]:
        if self.arch == "frcrn":
            with self._autocast(noisy.device):
                out = self.net.forward_outputs(noisy)
            est_wav = out.wav_l2.float()
            est_spec, mask = L.from_stacked(out.spec_l2.float()), L.from_stacked(out.mask_l2.float())
            with torch.no_grad():
                clean_spec = L.from_stacked(self.net.stft(clean))
                noisy_spec = L.from_stacked(self.net.stft(noisy))
        else:
            with torch.no_grad():
                noisy_spec, clean_spec = self.net.stft(noisy), self.net.stft(clean)
            with self._autocast(noisy.device):
                est_spec = self.net.forward_spec(noisy_spec)
            est_spec = est_spec.float()
            est_wav = self.net.istft(est_spec, length=noisy.shape[-1])
            mask = self._mask.float().permute(0, 3, 2, 1) if self._mask is not None else None  # [B, F, N, 2]
            self._mask = None
        if self.kind == "frcrn_mix":
            return L.frcrn_mix_loss(est_wav, mask, clean, clean_spec, noisy_spec)
        if self.kind == "gtcrn_hybrid":
            return L.gtcrn_hybrid_loss(est_spec, clean_spec, est_wav, clean)
        if self.kind == "si_snr":
            sisnr = L.si_snr(est_wav, clean).mean()
            return {"loss": -sisnr, "sisnr": sisnr.detach()}
        return L.composite_loss(
            est_spec,
            clean_spec,
            est_wav,
            clean,
            estimate_mask=mask,
            noisy_spec=noisy_spec,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
        )


# ------------------------------------------------------------------------------------ datasets


def build_datasets(cfg: FinetuneConfig, hop: int) -> tuple[Any, Any]:
    """Training dataset (changes each epoch) and fixed validation dataset, from ``cfg.data``."""
    d = cfg.data
    # Whole hops: both networks then return exactly as many samples as they were given.
    segment = segment_length(d.segment_seconds, hop)
    val_segment = segment_length(d.val_segment_seconds, hop)
    if d.kind == "mix":
        clean = index_audio(list_audio(d.clean_dir), what="clean speech")
        noise = index_audio(list_audio(d.noise_dir, d.noise_files), what="noise")
        if not noise:
            raise FileNotFoundError(
                f"no usable noise files in {d.noise_dir} (patterns: {d.noise_files or 'all'})"
            )
        rirs = index_audio(list_audio(d.rir_dir), what="RIR") if d.rir_dir else []
        train_clean, val_clean = split_files(clean, d.val_fraction)
        split = 1.0 - d.val_fraction
        common = dict(
            snr_db=tuple(d.snr_db),
            level_dbfs=tuple(d.level_dbfs),
            rirs=rirs,
            rir_probability=d.rir_probability,
        )
        train = MixingDataset(
            train_clean,
            noise,
            segment=segment,
            items=d.items_per_epoch,
            seed=cfg.seed,
            noise_span=(0.0, split),
            **common,
        )
        val = MixingDataset(
            val_clean,
            noise,
            segment=val_segment,
            items=d.val_items,
            seed=cfg.seed + 7919,
            noise_span=(split, 1.0),
            fixed=True,
            **common,
        )
        return train, val
    pairs = match_pairs(d.noisy_dir, d.clean_dir)
    if d.val_noisy_dir:
        val_pairs = match_pairs(d.val_noisy_dir, d.val_clean_dir or d.clean_dir)
    else:
        held = {e.path for e in split_files([p[0] for p in pairs], d.val_fraction)[1]}
        val_pairs = [p for p in pairs if p[0].path in held]
        pairs = [p for p in pairs if p[0].path not in held]
    train = PairedDataset(pairs, segment=segment, items=d.items_per_epoch, seed=cfg.seed)
    val = PairedDataset(
        val_pairs,
        segment=val_segment,
        items=min(d.val_items, len(val_pairs)),
        seed=cfg.seed + 7919,
        fixed=True,
    )
    return train, val


# ----------------------------------------------------------------------------------- validation


@dataclass
class Scores:
    """Validation result: mean SI-SNR (dB) over all items, mean PESQ-WB over the first few (NaN if none)."""

    si_snr: float
    pesq: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"si_snr": self.si_snr, "pesq": self.pesq}


def _metric_functions() -> tuple[Callable, Callable]:
    """(si_snr, pesq_wb) numpy functions: the evaluation module's, the pesq package as a fallback."""
    try:
        from denoise.metrics import pesq_wb, si_snr

        return si_snr, pesq_wb
    except ImportError:  # the metrics module is optional for training
        from pesq import pesq

        return _bounded_si_snr, lambda ref, est: float(pesq(16000, ref, est, "wb"))


def _bounded_si_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The loss module's eps-stabilised SI-SNR (dB): finite even for a silent or perfect estimate."""
    est, ref = torch.from_numpy(estimate)[None], torch.from_numpy(reference)[None]
    return float(L.si_snr(est.double(), ref.double())[0])


def score_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], pesq_items: int = 0) -> Scores:
    """Mean SI-SNR over ``(estimate, clean)`` 16 kHz pairs and mean PESQ-WB over the first ``pesq_items``.

    SI-SNR is ``denoise.metrics.si_snr``; where that is undefined (a silent estimate from a broken model,
    a perfect one) the eps-bounded value is used instead, so a model that outputs silence scores very
    low rather than being left out of the mean.
    """
    si_snr_fn, pesq_fn = _metric_functions()
    sisnr: list[float] = []
    pesq_scores: list[float] = []
    for k, (estimate, clean) in enumerate(pairs):
        est, ref = estimate.astype(np.float64), clean.astype(np.float64)
        try:
            value = si_snr_fn(ref, est)
        except ValueError:  # metrics.MetricUnavailable
            value = float("nan")
        sisnr.append(value if math.isfinite(value) else _bounded_si_snr(ref, est))
        if k < pesq_items:
            with contextlib.suppress(Exception):  # PESQ refuses e.g. a reference without speech
                pesq_scores.append(pesq_fn(ref, est))
    return Scores(float(np.mean(sisnr)), float(np.mean(pesq_scores)) if pesq_scores else float("nan"))


@torch.no_grad()
def evaluate(
    net: nn.Module,
    items: list[tuple[np.ndarray, np.ndarray]],
    *,
    device: torch.device,
    pesq_items: int = 0,
    batch_size: int = 8,
) -> Scores:
    """Score ``net`` (run in eval mode) on fixed ``(noisy, clean)`` 16 kHz pairs of equal length."""
    was_training = net.training
    net.eval()
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        enhanced = net(torch.from_numpy(np.stack([n for n, _ in chunk])).to(device)).float().cpu().numpy()
        pairs += [(enhanced[k], clean) for k, (_, clean) in enumerate(chunk)]
    net.train(was_training)
    return score_pairs(pairs, pesq_items)


def input_scores(items: list[tuple[np.ndarray, np.ndarray]], pesq_items: int = 0) -> Scores:
    """The same scores for the unprocessed noisy inputs (the floor the checkpoint is measured from)."""
    return score_pairs(items, pesq_items)


# ---------------------------------------------------------------------------------------- trainer


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


class Interrupted(Exception):
    """Raised inside the loop when a stop was requested (Ctrl-C / SIGTERM)."""


def _select_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def _default_register_name(cfg: FinetuneConfig) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(cfg.output.run_dir).resolve().name).strip("_") or "run"
    return f"{cfg.model.arch}_ft_{stem}"


class Trainer:
    """One fine-tuning run described by a :class:`FinetuneConfig`.

    Args:
        cfg: the configuration.
        resume: continue from ``run_dir/last.pt`` when it exists (the default); ``False`` starts over.
        on_step: called as ``on_step(trainer, step, terms)`` after every optimiser step (progress
            hooks, tests).
    """

    def __init__(
        self,
        cfg: FinetuneConfig,
        *,
        resume: bool = True,
        on_step: Callable[[Trainer, int, dict[str, float]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.resume = resume
        self.on_step = on_step
        self.run_dir = Path(cfg.output.run_dir).expanduser()
        self.stop_requested = False
        self._bar: Any = None  # the tqdm bar while the loop runs
        self._owns_process_group = False
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.is_main = self.rank == 0

    # ---------------------------------------------------------------- setup

    def _setup_distributed(self) -> None:
        if self.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
            self._owns_process_group = True
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _say(self, message: str) -> None:
        if not self.is_main:
            return
        log.info(message)
        if self._bar is not None:  # above the progress bar, not glued to its line
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def _build(self) -> None:
        from denoise_models import load_model

        cfg = self.cfg
        self.device = _select_device(cfg.device, self.local_rank)
        self._setup_distributed()
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.spec = ARCH_SPECS[cfg.model.arch]
        self.net = load_model(cfg.model.arch, cfg.model.weights, device=self.device, progress=self.is_main)
        trainable, total = apply_freeze(self.net, cfg.model.arch, cfg.model.freeze)
        self._say(
            f"{cfg.model.arch} from {cfg.model.weights}: {trainable:,} of {total:,} parameters trainable "
            f"(freeze = {cfg.model.freeze}, BatchNorm statistics "
            f"{'frozen' if cfg.model.freeze_batchnorm else 'updated'})"
        )
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the freeze policy leaves no parameter to train")
        self.amp = cfg.optim.amp and self.device.type == "cuda"
        weights = (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma)
        self.loss_module = LossModule(self.net, cfg.model.arch, cfg.loss.kind, weights, amp=self.amp)
        self.model: nn.Module = self.loss_module
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.optim.plateau_factor, patience=cfg.optim.plateau_patience
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

        self.train_set, val_set = build_datasets(cfg, self.spec.hop)
        self.sampler = ResumableSampler(
            len(self.train_set), shuffle=True, seed=cfg.seed, rank=self.rank, world=self.world
        )
        self.steps_per_epoch = len(self.sampler) // cfg.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.items_per_epoch ({cfg.data.items_per_epoch}) gives no full batch of "
                f"{cfg.optim.batch_size} per process"
            )
        total_steps = cfg.optim.epochs * self.steps_per_epoch
        self.total_steps = min(total_steps, cfg.optim.max_steps) if cfg.optim.max_steps else total_steps
        self.val_items: list[tuple[np.ndarray, np.ndarray]] = []
        if self.is_main:
            self.val_items = [(n.numpy(), c.numpy()) for n, c in (val_set[i] for i in range(len(val_set)))]

    def _loader(self, epoch: int, skip_batches: int) -> DataLoader:
        self.train_set.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip_batches * self.cfg.optim.batch_size)
        workers = self.cfg.data.num_workers
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.optim.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    # ---------------------------------------------------------------- state

    def _state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "baseline": self.baseline.as_dict(),
            "noisy": self.noisy_scores.as_dict(),
            "best": self.best.as_dict(),
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "finished": self.finished,
            "config": self.cfg.to_dict(),
        }

    def _save_last(self) -> None:
        if self.is_main:
            atomic_torch_save(self._state(), self.run_dir / "last.pt")
        self._barrier()

    def _load_last(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path} was written by another version of the trainer; use --fresh")
        changed = _config_changes(state.get("config", {}), self.cfg.to_dict())
        if changed:
            self._say("warning: resuming with a changed config: " + ", ".join(changed))
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.baseline, self.noisy_scores = Scores(**state["baseline"]), Scores(**state["noisy"])
        self.best, self.best_epoch = Scores(**state["best"]), state["best_epoch"]
        self.bad_epochs, self.history = state["bad_epochs"], state["history"]
        self.finished = state["finished"]
        torch.set_rng_state(state["torch_rng"])

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # ---------------------------------------------------------------- logging

    def _open_logs(self) -> None:
        self.writer = None
        if not self.is_main:
            return
        if self.cfg.output.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step or None)
            except ImportError:
                self._say("TensorBoard is not installed: logging to CSV only")
        _truncate_csv(self.run_dir / "steps.csv", "step", self.step)  # rows past the resumed step
        _truncate_csv(self.run_dir / "epochs.csv", "step", self.step)

    def _log_step(self, terms: dict[str, float], grad_norm: float, seconds: float) -> None:
        if not self.is_main:
            return
        row = {
            "step": self.step,
            "epoch": self.epoch + 1,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": grad_norm,
            "seconds": round(seconds, 4),
            **terms,
        }
        _append_csv(self.run_dir / "steps.csv", row)
        if self.writer is not None:
            for key, value in terms.items():
                self.writer.add_scalar(f"train/{key}", value, self.step)
            self.writer.add_scalar("train/lr", row["lr"], self.step)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        _append_csv(self.run_dir / "epochs.csv", row)
        if self.writer is not None:
            for key in ("val_si_snr", "val_pesq"):
                if math.isfinite(row[key]):
                    self.writer.add_scalar(key.replace("_", "/", 1), row[key], self.step)
            self.writer.flush()
        plot_curves(self.run_dir)

    # ---------------------------------------------------------------- validation

    def _validate(self, label: str) -> Scores:
        scores = Scores(float("nan"))
        if self.is_main:
            scores = evaluate(
                self.net, self.val_items, device=self.device, pesq_items=self.cfg.output.pesq_items
            )
            self._say(f"{label}: validation {_fmt(scores)}")
        return Scores(**self._broadcast(scores.as_dict()))

    def _end_of_epoch(self, train_loss: float) -> bool:
        """Validate, keep the best, step the scheduler; True when early stopping says stop."""
        scores = self._validate(f"epoch {self.epoch + 1} (step {self.step})")
        margin = self.cfg.optim.min_improvement_db
        improved = scores.si_snr > self.best.si_snr + margin
        if improved:
            self.best, self.best_epoch, self.bad_epochs = scores, self.epoch + 1, 0
            if self.is_main:
                self._export_best()
        else:
            self.bad_epochs += 1
        if self.is_main and scores.si_snr < self.baseline.si_snr:
            self._say(
                f"  ! below the starting checkpoint ({self.baseline.si_snr:.2f} dB): "
                "the original weights stay the best so far"
            )
        self.scheduler.step(scores.si_snr)
        row = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": train_loss,
            "val_si_snr": scores.si_snr,
            "val_pesq": scores.pesq,
            "lr": self.optimizer.param_groups[0]["lr"],
            "best": int(improved),
        }
        self.history.append(row)
        if self.is_main:
            self._log_epoch(row)
        patience = self.cfg.optim.early_stop_patience
        return bool(patience and self.bad_epochs >= patience)

    def _export_best(self, *, original: bool = False) -> None:
        """Write the current weights to ``best.pt`` (our format; ``original``: before any step)."""
        from denoise_models.weights import save_checkpoint

        meta = {
            "base_weights": str(self.cfg.model.weights),
            "fine_tuned": not original,
            "epoch": self.best_epoch,
            "step": self.step,
            "val_si_snr": self.best.si_snr,
            "val_pesq": self.best.pesq,
            "baseline_si_snr": self.baseline.si_snr,
            "baseline_pesq": self.baseline.pesq,
            "description": (
                f"{self.cfg.model.arch} {self.cfg.model.weights} unchanged: fine-tuning run "
                f"{self.run_dir.resolve().name} did not improve on it"
                if original
                else f"{self.cfg.model.arch} fine-tuned from {self.cfg.model.weights} "
                f"({self.run_dir.resolve().name}): val SI-SNR {self.baseline.si_snr:.2f} -> "
                f"{self.best.si_snr:.2f} dB"
            ),
        }
        save_checkpoint(self.run_dir / "best.pt", self.net, self.cfg.model.arch, meta)

    # ---------------------------------------------------------------- the loop

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        for noisy, clean in self._loader(self.epoch, self.batch_in_epoch):
            yield noisy.to(self.device, non_blocking=True), clean.to(self.device, non_blocking=True)

    def _train_step(self, noisy: Tensor, clean: Tensor) -> tuple[dict[str, float], float]:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.model(noisy, clean)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip))
        if self.amp or math.isfinite(grad_norm):  # the AMP scaler skips non-finite steps itself
            self.scaler.step(self.optimizer)
        else:  # same decision on every rank: the gradients were all-reduced
            self.nonfinite_steps += 1
            log.warning("step %d: non-finite gradient, update skipped", self.step + 1)
        self.scaler.update()
        values = torch.stack([v.detach().float() for v in terms.values()])
        if self.world > 1:  # log the mean over all processes, not rank 0's share
            dist.all_reduce(values)
            values /= self.world
        return dict(zip(terms, values.tolist(), strict=True)), grad_norm

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self.stop_requested:  # second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.stop_requested = True
        self._say("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)")

    def run(self) -> FinetuneResult:
        """Train (or resume) to the end; returns the result (rank 0's view on every rank)."""
        handlers = {}
        if threading_is_main():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self._request_stop)
        try:
            return self._run()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self._owns_process_group and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self) -> FinetuneResult:
        cfg = self.cfg
        self._build()
        self.step = self.epoch = self.batch_in_epoch = self.bad_epochs = self.nonfinite_steps = 0
        self.history: list[dict[str, Any]] = []
        self.finished = False
        last = self.run_dir / "last.pt"
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._barrier()
        resumed = self.resume and last.is_file()
        if resumed:
            self._load_last(last)
            patience = cfg.optim.early_stop_patience
            early_stopped = bool(patience and self.bad_epochs >= patience)
            more = self.step < self.total_steps and self.epoch < cfg.optim.epochs
            if self.finished and more and not early_stopped:  # e.g. --epochs raised after a finished run
                self.finished = False
            self._say(f"resuming {self.run_dir} at step {self.step} (epoch {self.epoch + 1})")
        else:
            if self.is_main:
                for name in ("steps.csv", "epochs.csv", "last.pt", "best.pt", "summary.json"):
                    (self.run_dir / name).unlink(missing_ok=True)
                (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            self.noisy_scores = (
                input_scores(self.val_items, cfg.output.pesq_items) if self.is_main else Scores(0)
            )
            self.noisy_scores = Scores(**self._broadcast(self.noisy_scores.as_dict()))
            self.baseline = self._validate("starting checkpoint")
            self.best, self.best_epoch = self.baseline, 0
            if self.is_main:
                self._say(f"  (unprocessed validation inputs: {_fmt(self.noisy_scores)})")
                self._export_best(original=True)  # the bar: replaced only by something better
            row = {"epoch": 0, "step": 0, "train_loss": float("nan"), "val_si_snr": self.baseline.si_snr}
            self.history.append({**row, "val_pesq": self.baseline.pesq, "lr": cfg.optim.lr, "best": 1})
        self._open_logs()
        if self.is_main and not resumed:
            self._log_epoch(self.history[-1])
        interrupted = False
        try:
            if self.finished:
                self._say(f"{self.run_dir} already finished at step {self.step}; use --fresh to start over")
            else:
                self._loop()
        except Interrupted:
            interrupted = True
        finally:
            if self.writer is not None:
                self.writer.close()
        if interrupted:
            self._save_last()
            self._say(f"interrupted at step {self.step}: checkpoint saved; run the same command to resume")
            return self._result(interrupted=True)
        return self._finish()

    def _loop(self) -> None:
        cfg = self.cfg
        bar = None
        if self.is_main and cfg.output.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.total_steps, initial=self.step, desc="fine-tune", unit="step", dynamic_ncols=True
            )
            self._bar = bar
        ema = None
        try:
            while self.epoch < cfg.optim.epochs and self.step < self.total_steps:
                losses: list[float] = []
                for noisy, clean in self._batches():  # resumes at batch_in_epoch
                    t0 = time.perf_counter()
                    terms, grad_norm = self._train_step(noisy, clean)
                    self.step += 1
                    self.batch_in_epoch += 1
                    losses.append(terms["loss"])
                    ema = terms["loss"] if ema is None else 0.9 * ema + 0.1 * terms["loss"]
                    self._log_step(terms, grad_norm, time.perf_counter() - t0)
                    if bar is not None:
                        bar.set_postfix(loss=f"{ema:.4g}", lr=f"{self.optimizer.param_groups[0]['lr']:.2g}")
                        bar.update(1)
                    if self.on_step is not None:
                        self.on_step(self, self.step, terms)
                    if self.step % cfg.output.checkpoint_every == 0:
                        self._save_last()
                    if self._broadcast(self.stop_requested):
                        raise Interrupted
                    if self.step >= self.total_steps:
                        break
                # Validate at the end of every epoch, and once more where max_steps cuts an epoch short,
                # so that the last weights always get their chance to become the best.
                epoch_done = self.batch_in_epoch >= self.steps_per_epoch
                stop = self._end_of_epoch(float(np.mean(losses)) if losses else float("nan"))
                if epoch_done:
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                self._save_last()
                if stop:
                    self._say(f"early stop: no new best for {self.bad_epochs} epochs")
                    break
        finally:
            if bar is not None:
                bar.close()
                self._bar = None
        self.finished = True
        self._save_last()

    # ---------------------------------------------------------------- the end

    def _result(self, *, interrupted: bool = False) -> FinetuneResult:
        improved = self.best_epoch > 0
        return FinetuneResult(
            run_dir=self.run_dir,
            baseline=self.baseline,
            best=self.best,
            best_epoch=self.best_epoch,
            improved=improved,
            steps=self.step,
            best_path=self.run_dir / "best.pt",
            noisy=self.noisy_scores,
            interrupted=interrupted,
            history=list(self.history),
        )

    def _finish(self) -> FinetuneResult:
        result = self._result()
        if self.is_main:
            if not result.improved:
                bar = "!" * 78
                self._say(
                    f"\n{bar}\n!! Fine-tuning did NOT improve on the starting checkpoint.\n"
                    f"!!   starting checkpoint: validation SI-SNR {self.baseline.si_snr:.2f} dB\n"
                    f"!!   best fine-tuned:     {_best_finetuned(self.history):.2f} dB\n"
                    f'!! best.pt is the ORIGINAL weights. Try a lower optim.lr, freeze = "backbone", more\n'
                    f'!! (or more varied) data, or loss.kind = "native".\n'
                    + (
                        "!! It is registered anyway (output.register_if_not_improved = true).\n"
                        if self.cfg.output.register_if_not_improved
                        else "!! Nothing was registered in the weights store.\n"
                    )
                    + bar
                )
            else:
                self._say(
                    f"fine-tuning improved on the starting checkpoint (epoch {self.best_epoch}):\n"
                    f"  before: validation {_fmt(self.baseline)}\n  after:  validation {_fmt(self.best)}"
                )
            if result.improved or self.cfg.output.register_if_not_improved:
                result.registered_as = self._register()
            self._write_summary(result)
        self._barrier()
        return result

    def _register(self) -> str:
        from denoise_models.weights import register_local

        name = self.cfg.output.register_as or _default_register_name(self.cfg)
        meta = torch.load(self.run_dir / "best.pt", map_location="cpu", weights_only=True).get("meta", {})
        path = register_local(name, self.cfg.model.arch, self.run_dir / "best.pt", meta)
        self._say(
            f"registered as {name!r} ({path}); use it with:\n"
            f"  python 1键推理.py --model {self.cfg.model.arch} --weights {name}"
        )
        return name

    def _write_summary(self, result: FinetuneResult) -> None:
        summary = {
            "arch": self.cfg.model.arch,
            "start_weights": str(self.cfg.model.weights),
            "steps": result.steps,
            "world_size": self.world,
            "improved": result.improved,
            "best_epoch": result.best_epoch,
            "noisy": result.noisy.as_dict() if result.noisy else None,
            "baseline": result.baseline.as_dict(),
            "best": result.best.as_dict(),
            "registered_as": result.registered_as,
            "best_path": str(result.best_path),
            "nonfinite_steps": self.nonfinite_steps,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2) + "\n")


def _fmt(scores: Scores) -> str:
    pesq = f"{scores.pesq:.3f}" if math.isfinite(scores.pesq) else "n/a"
    return f"SI-SNR {scores.si_snr:.2f} dB, PESQ-WB {pesq}"


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _best_finetuned(history: list[dict[str, Any]]) -> float:
    scores = [row["val_si_snr"] for row in history if row["epoch"] > 0 or row["step"] > 0]
    return max(scores) if scores else float("nan")


def _config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys that differ between two config dicts, ignoring ones that may change between sessions."""
    free = {
        "optim.epochs",
        "optim.max_steps",
        "output.progress",
        "output.register_as",
        "device",
        "data.num_workers",
        "output.tensorboard",
        "threads",
    }
    changes = []
    for section, values in new.items():
        if isinstance(values, dict):
            for key, value in values.items():
                name = f"{section}.{key}"
                if name not in free and old.get(section, {}).get(key) != value:
                    changes.append(name)
        elif section not in free and old.get(section) != values:
            changes.append(section)
    return changes


# --------------------------------------------------------------------------------------- logs


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _truncate_csv(path: Path, key: str, upto: int) -> None:
    """Drop rows logged after step ``upto`` (they belong to steps a resumed run will redo)."""
    rows = _read_csv(path)
    if not rows or all(int(float(r[key])) <= upto for r in rows):
        return
    keep = [r for r in rows if int(float(r[key])) <= upto]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(keep)


def plot_curves(run_dir: str | Path) -> Path | None:
    """``loss_curve.png``: training loss per step (raw + smoothed) and validation SI-SNR per epoch."""
    run_dir = Path(run_dir)
    steps, epochs = _read_csv(run_dir / "steps.csv"), _read_csv(run_dir / "epochs.csv")
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
    out = run_dir / "loss_curve.png"
    fig.savefig(out, dpi=100)
    return out


def finetune(cfg: FinetuneConfig, *, resume: bool = True) -> FinetuneResult:
    """Run a fine-tune described by ``cfg`` (see :class:`Trainer`)."""
    return Trainer(cfg, resume=resume).run()
