"""Fine-tuning FRCRN / GTCRN on your own noise, safely: the loop, its state, resume and DDP.

What "safely" means here
- The starting checkpoint is scored on the held-out validation mixtures before the first step; that
  score is the bar. ``best.pt`` starts as the original weights and is only replaced by a checkpoint
  that beats the bar, so a fine-tune that makes things worse ends with the original, and says so.
- The default objective is the network's own training loss, the learning rate is 10x below the
  from-scratch rate and BatchNorm statistics stay as pretrained: the three usual ways a fine-tune
  ends below its checkpoint.
- Every step runs in train mode (:func:`~denoise.finetune.objective.set_train_mode`), validation in
  eval mode, after which each module's mode is restored.
- ``last.pt`` (model, optimiser, scheduler, AMP scaler, data position) is written every
  ``checkpoint_every`` steps and on Ctrl-C; running the same command again resumes. Data items are
  pure functions of ``(seed, epoch, index)``, so a resumed run computes exactly what an uninterrupted
  one would have.

Run folder: ``config.json``, ``steps.csv``, ``epochs.csv``, ``loss_curve.png``, ``tb/``, ``last.pt`` (resume
state), ``best.pt`` (readable by ``load_model``), ``summary.json``. The best model is registered in the local
weights store, so ``python 1键推理.py --weights <name>`` uses it at once.

Distributed: the same entry point under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU); rank 0 validates,
logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

import denoise.finetune.distributed as D
from denoise.finetune.config import FinetuneConfig
from denoise.finetune.datasets import build_datasets
from denoise.finetune.objective import LossModule, amp_dtype, apply_freeze, needs_grad_scaler, set_train_mode
from denoise.finetune.runlog import RunLog, write_json
from denoise.finetune.state import (
    FinetuneResult,
    Progress,
    best_checkpoint_meta,
    config_changes,
    default_register_name,
    finish_message,
)
from denoise.finetune.validation import Scores, input_scores, validate
from denoise_models import load_model
from denoise_models.spec import spec_of
from denoise_models.weights import atomic_torch_save, register_local, save_checkpoint

log = logging.getLogger(__name__)

STATE_VERSION = 1
# Never in the run folder's old files: a fresh run starts without them.
_RUN_FILES = ("steps.csv", "epochs.csv", "last.pt", "best.pt", "summary.json")


class Interrupted(Exception):
    """Raised inside the loop when a stop was requested (Ctrl-C / SIGTERM)."""


def should_step(scaler_enabled: bool, grad_norm: float) -> bool:
    """Apply the update? An enabled fp16 ``GradScaler`` skips non-finite steps itself; otherwise
    (fp32, bf16) a non-finite gradient norm means skip. The norm is of all-reduced gradients, so every
    rank decides the same."""
    return scaler_enabled or math.isfinite(grad_norm)


class Trainer:
    """One fine-tuning run described by a :class:`FinetuneConfig`.

    Construction loads the network, joins the process group (under torchrun) and indexes the data;
    :meth:`run` trains (or resumes) to the end.

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
        self.cfg, self.resume, self.on_step = cfg, resume, on_step
        self.run_dir = Path(cfg.output.run_dir).expanduser()
        self.stop_requested = False
        self.procs = D.Processes.from_environment()
        self.device = D.process_device(cfg.device, self.procs.local_rank)
        self._owns_process_group = D.join(self.procs, self.device)
        self._bar: Any = None  # the tqdm bar while the loop runs
        self.runlog = RunLog(self.run_dir, enabled=self.procs.is_main, tensorboard=cfg.output.tensorboard)
        torch.manual_seed(cfg.seed)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)

        arch = cfg.model.arch
        self.net = load_model(arch, cfg.model.weights, device=self.device, progress=self.procs.is_main)
        trainable, total = apply_freeze(self.net, arch, cfg.model.freeze)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the freeze policy leaves no parameter to train")
        self._say(
            f"{arch} from {cfg.model.weights}: {trainable:,} of {total:,} parameters trainable "
            f"(freeze = {cfg.model.freeze}, BatchNorm statistics "
            f"{'frozen' if cfg.model.freeze_batchnorm else 'updated'})"
        )
        self.autocast_dtype = amp_dtype(self.device, cfg.optim.amp, cfg.optim.amp_dtype)
        self.loss_module = LossModule(
            self.net, arch, cfg.loss.kind, (cfg.loss.alpha, cfg.loss.beta, cfg.loss.gamma),
            autocast_dtype=self.autocast_dtype,
        )  # fmt: skip
        self.model: nn.Module = self.loss_module
        if self.procs.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.loss_module, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=cfg.optim.plateau_factor, patience=cfg.optim.plateau_patience
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(self.autocast_dtype))

        self.train_set, val_set = build_datasets(cfg, spec_of(arch).hop_length)
        self.sampler = D.ResumableSampler(
            len(self.train_set), shuffle=True, seed=cfg.seed, rank=self.procs.rank, world=self.procs.world
        )
        self.steps_per_epoch = len(self.sampler) // cfg.optim.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.items_per_epoch ({cfg.data.items_per_epoch}) gives no full batch of "
                f"{cfg.optim.batch_size} per process"
            )
        total_steps = cfg.optim.epochs * self.steps_per_epoch
        self.total_steps = min(total_steps, cfg.optim.max_steps) if cfg.optim.max_steps else total_steps
        # Only rank 0 validates: the other ranks do not hold the validation audio.
        held_out = range(len(val_set) if self.procs.is_main else 0)
        self.val_items = [(n.numpy(), c.numpy()) for n, c in (val_set[i] for i in held_out)]
        self.progress = Progress()
        set_train_mode(self.net, freeze_batchnorm=cfg.model.freeze_batchnorm)

    # ---------------------------------------------------------------- small helpers

    def _say(self, message: str) -> None:
        if not self.procs.is_main:
            return
        log.info(message)
        if self._bar is not None:  # above the progress bar, not glued to its line
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def _loader(self) -> DataLoader:
        p = self.progress
        self.train_set.set_epoch(p.epoch)
        self.sampler.set_epoch(p.epoch, p.batch_in_epoch * self.cfg.optim.batch_size)
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

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        # Pinned host memory (CUDA) makes these copies asynchronous; on CPU they are no-ops.
        for noisy, clean in self._loader():
            yield noisy.to(self.device, non_blocking=True), clean.to(self.device, non_blocking=True)

    # ---------------------------------------------------------------- state

    def _save_last(self) -> None:
        if self.procs.is_main:
            state = {
                "version": STATE_VERSION,
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(),
                **self.progress.to_state(),
            }
            atomic_torch_save(state, self.run_dir / "last.pt")
        D.barrier(self.procs)

    def _load_last(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{path} was written by another version of the trainer; use --fresh")
        changed = config_changes(state.get("config", {}), self.cfg.to_dict())
        if changed:
            self._say("warning: resuming with a changed config: " + ", ".join(changed))
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.progress = Progress.from_state(state)

    def _start_fresh(self) -> None:
        """Score the inputs and the starting checkpoint; ``best.pt`` = the starting weights."""
        cfg, p = self.cfg, self.progress
        if self.procs.is_main:
            for name in _RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
        noisy = input_scores(self.val_items, cfg.output.pesq_items) if self.procs.is_main else Scores(0.0)
        p.noisy = Scores(**D.broadcast(self.procs, noisy.as_dict()))
        p.baseline = self._validate("starting checkpoint")
        p.best, p.best_epoch = p.baseline, 0
        self._say(f"  (unprocessed validation inputs: {p.noisy})")
        if self.procs.is_main:
            self._export_best(original=True)  # the bar: replaced only by something better
        p.history.append(
            {"epoch": 0, "step": 0, "train_loss": float("nan"), "val_si_snr": p.baseline.si_snr,
             "val_pesq": p.baseline.pesq, "lr": cfg.optim.lr, "best": 1}
        )  # fmt: skip

    # ---------------------------------------------------------------- validation and the best model

    def _validate(self, label: str) -> Scores:
        scores = Scores(float("nan"))
        if self.procs.is_main:
            scores = validate(
                self.net, self.val_items, device=self.device, pesq_items=self.cfg.output.pesq_items
            )
            self._say(f"{label}: validation {scores}")
        return Scores(**D.broadcast(self.procs, scores.as_dict()))

    def _end_of_epoch(self, train_loss: float) -> bool:
        """Validate, keep the best, step the scheduler; True when early stopping says stop."""
        p = self.progress
        scores = self._validate(f"epoch {p.epoch + 1} (step {p.step})")
        improved = scores.si_snr > p.best.si_snr + self.cfg.optim.min_improvement_db
        if improved:
            p.best, p.best_epoch, p.bad_epochs = scores, p.epoch + 1, 0
            if self.procs.is_main:
                self._export_best()
        else:
            p.bad_epochs += 1
        if scores.si_snr < p.baseline.si_snr:
            self._say(
                f"  ! below the starting checkpoint ({p.baseline.si_snr:.2f} dB): "
                "the original weights stay the best so far"
            )
        self.scheduler.step(scores.si_snr)
        row = {
            "epoch": p.epoch + 1, "step": p.step, "train_loss": train_loss, "val_si_snr": scores.si_snr,
            "val_pesq": scores.pesq, "lr": self.optimizer.param_groups[0]["lr"], "best": int(improved),
        }  # fmt: skip
        p.history.append(row)
        self.runlog.epoch(row)
        patience = self.cfg.optim.early_stop_patience
        return bool(patience and p.bad_epochs >= patience)

    def _export_best(self, *, original: bool = False) -> None:
        """Write the current weights to ``best.pt`` (our format; ``original``: before any step)."""
        meta = best_checkpoint_meta(self.cfg, self.progress, self.run_dir.resolve().name, original=original)
        save_checkpoint(self.run_dir / "best.pt", self.net, self.cfg.model.arch, meta)

    # ---------------------------------------------------------------- one step

    def _train_step(self, noisy: Tensor, clean: Tensor) -> tuple[dict[str, float], float]:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.model(noisy, clean)
        self.scaler.scale(terms["loss"]).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.grad_clip))
        if should_step(self.scaler.is_enabled(), grad_norm):
            self.scaler.step(self.optimizer)
        else:
            self.progress.nonfinite_steps += 1
            log.warning("step %d: non-finite gradient, update skipped", self.progress.step + 1)
        self.scaler.update()
        values = D.mean_over_processes(self.procs, torch.stack([v.detach().float() for v in terms.values()]))
        return dict(zip(terms, values.tolist(), strict=True)), grad_norm

    # ---------------------------------------------------------------- the loop

    def _request_stop(self, signum: int, _frame: Any) -> None:
        if self.stop_requested:  # second Ctrl-C: stop now, without the checkpoint
            raise KeyboardInterrupt
        self.stop_requested = True
        self._say("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort at once)")

    def run(self) -> FinetuneResult:
        """Train (or resume) to the end; returns the result (rank 0's view on every rank)."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
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
        last = self.run_dir / "last.pt"
        if self.procs.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        D.barrier(self.procs)
        resumed = self.resume and last.is_file()
        if resumed:
            self._load_last(last)
            p, optim = self.progress, self.cfg.optim
            early_stopped = bool(optim.early_stop_patience and p.bad_epochs >= optim.early_stop_patience)
            more = p.step < self.total_steps and p.epoch < optim.epochs
            if p.finished and more and not early_stopped:  # e.g. --epochs raised after a finished run
                p.finished = False
            self._say(f"resuming {self.run_dir} at step {p.step} (epoch {p.epoch + 1})")
        else:
            self._start_fresh()
        note = self.runlog.open(self.progress.step)
        if note:
            self._say(note)
        if not resumed:
            self.runlog.epoch(self.progress.history[-1])
        try:
            if self.progress.finished:
                self._say(
                    f"{self.run_dir} already finished at step {self.progress.step}; use --fresh to start over"
                )
            else:
                set_train_mode(self.net, freeze_batchnorm=self.cfg.model.freeze_batchnorm)
                self._loop()
        except Interrupted:
            self._save_last()
            self._say(
                f"interrupted at step {self.progress.step}: checkpoint saved; run the same command to resume"
            )
            return self._result(interrupted=True)
        finally:
            self.runlog.close()
        return self._finish()

    def _loop(self) -> None:
        cfg, p = self.cfg, self.progress
        if self.procs.is_main and cfg.output.progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=self.total_steps, initial=p.step, desc="fine-tune", unit="step", dynamic_ncols=True
            )
        try:
            while p.epoch < cfg.optim.epochs and p.step < self.total_steps:
                train_loss = self._epoch()
                # Validate at the end of every epoch, and once more where max_steps cuts an epoch short,
                # so that the last weights always get their chance to become the best.
                epoch_done = p.batch_in_epoch >= self.steps_per_epoch
                stop = self._end_of_epoch(train_loss)
                if epoch_done:
                    p.epoch, p.batch_in_epoch = p.epoch + 1, 0
                self._save_last()
                if stop:
                    self._say(f"early stop: no new best for {p.bad_epochs} epochs")
                    break
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        p.finished = True
        self._save_last()

    def _epoch(self) -> float:
        """Train until the epoch (or max_steps) ends; the mean training loss of the steps taken."""
        p, out = self.progress, self.cfg.output
        losses: list[float] = []
        for noisy, clean in self._batches():  # resumes at batch_in_epoch
            t0 = time.perf_counter()
            terms, grad_norm = self._train_step(noisy, clean)
            p.step += 1
            p.batch_in_epoch += 1
            losses.append(terms["loss"])
            lr = self.optimizer.param_groups[0]["lr"]
            row = {"step": p.step, "epoch": p.epoch + 1, "lr": lr, "grad_norm": grad_norm,
                   "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip
            self.runlog.step(row, terms)
            if self._bar is not None:
                self._bar.set_postfix(loss=f"{terms['loss']:.4g}", lr=f"{lr:.2g}")
                self._bar.update(1)
            if self.on_step is not None:
                self.on_step(self, p.step, terms)
            if p.step % out.checkpoint_every == 0:
                self._save_last()
            if D.broadcast(self.procs, self.stop_requested):
                raise Interrupted
            if p.step >= self.total_steps:
                break
        return float(np.mean(losses)) if losses else float("nan")

    # ---------------------------------------------------------------- the end

    def _result(self, *, interrupted: bool = False) -> FinetuneResult:
        p = self.progress
        return FinetuneResult(
            run_dir=self.run_dir, baseline=p.baseline, best=p.best, best_epoch=p.best_epoch,
            improved=p.best_epoch > 0, steps=p.step, best_path=self.run_dir / "best.pt", noisy=p.noisy,
            interrupted=interrupted, history=list(p.history),
        )  # fmt: skip

    def _finish(self) -> FinetuneResult:
        result = self._result()
        if self.procs.is_main:
            self._say(finish_message(result, register_anyway=self.cfg.output.register_if_not_improved))
            out = self.cfg.output
            if out.register and (result.improved or out.register_if_not_improved):
                result.registered_as = self._register()
            write_json(
                self.run_dir / "summary.json", result.summary(self.cfg, self.procs.world, self.progress)
            )
        D.barrier(self.procs)
        return result

    def _register(self) -> str:
        cfg = self.cfg
        name = cfg.output.register_as or default_register_name(cfg)
        meta = torch.load(self.run_dir / "best.pt", map_location="cpu", weights_only=True).get("meta", {})
        path = register_local(name, cfg.model.arch, self.run_dir / "best.pt", meta)
        self._say(
            f"registered as {name!r} ({path}); use it with:\n"
            f"  python 1键推理.py --model {cfg.model.arch} --weights {name}"
        )
        return name


def finetune(cfg: FinetuneConfig, *, resume: bool = True) -> FinetuneResult:
    """Run a fine-tune described by ``cfg`` (see :class:`Trainer`)."""
    return Trainer(cfg, resume=resume).run()
