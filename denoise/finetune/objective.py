"""What a fine-tuning step optimises and in which state the network runs it.

- :func:`apply_freeze`: which parameters train, from the architecture's parameter groups
  (:attr:`denoise_models.spec.ArchSpec.params`).
- :func:`set_train_mode` / :func:`evaluating`: the module modes of a training step and of validation.
  Training runs in train mode (cuDNN refuses ``backward()`` through an RNN in eval mode), with the
  BatchNorm layers that must not learn statistics, and every frozen sub-module, in eval mode.
- :func:`amp_dtype`: which autocast precision a device gets (bf16 where the GPU has it, else fp16 with
  a gradient scaler; none on CPU).
- :class:`LossModule`: network + loss in one ``nn.Module`` so that DistributedDataParallel sees one
  forward pass.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn

import denoise.finetune.losses as L
from denoise.finetune.config import AMP_DTYPES
from denoise_models.spec import spec_of

# ------------------------------------------------------------------------------------- freezing


def apply_freeze(net: nn.Module, arch: str, policy: str) -> tuple[int, int]:
    """Set ``requires_grad`` by freeze policy; returns ``(trainable, total)`` parameter counts.

    ``none``: everything except fixed transforms; ``encoders``: also not the encoder side;
    ``backbone``: only the mask-producing layers (the groups of ``spec_of(arch).params``).
    """
    groups = spec_of(arch).params
    total = trainable = 0
    for name, param in net.named_parameters():
        frozen = {
            "none": False,
            "encoders": bool(re.match(groups.encoders, name)),
            "backbone": not re.match(groups.mask_layers, name),
        }[policy]
        train = not frozen and not re.match(groups.fixed, name)
        param.requires_grad_(train)
        total += param.numel()
        trainable += param.numel() if train else 0
    return trainable, total


# ---------------------------------------------------------------------------------------- modes


def set_train_mode(net: nn.Module, *, freeze_batchnorm: bool) -> None:
    """Put ``net`` in the mode of a training step, module by module.

    - A module whose parameters are all frozen is in eval mode (its BatchNorm statistics do not drift);
      a module without parameters of its own follows its parent.
    - With ``freeze_batchnorm`` every BatchNorm layer is in eval mode: its pretrained running
      statistics are used and kept.
    - Recurrent layers always stay in train mode: cuDNN computes their backward pass only in train mode
      ("cudnn RNN backward can only be called in training mode"), gradients may have to cross a frozen
      RNN to reach trainable layers before it, and without RNN dropout both modes compute the same.
    """

    def visit(module: nn.Module, parent_frozen: bool) -> None:
        params = list(module.parameters())
        frozen = not any(p.requires_grad for p in params) if params else parent_frozen
        batchnorm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        eval_mode = frozen or (freeze_batchnorm and batchnorm)
        module.training = isinstance(module, nn.RNNBase) or not eval_mode  # this module only
        for child in module.children():
            visit(child, frozen)

    visit(net, parent_frozen=False)


@contextlib.contextmanager
def evaluating(net: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (and no gradients) inside the block; afterwards every module's own mode is restored.

    ``net.train(previous)`` would not do: it would also switch frozen BatchNorm layers back to train.
    """
    modes = [(module, module.training) for module in net.modules()]
    net.eval()
    try:
        with torch.no_grad():
            yield net
    finally:
        for module, training in modes:
            module.training = training


# ------------------------------------------------------------------------------------------ AMP


def amp_dtype(device: torch.device, enabled: bool, kind: str = "auto") -> torch.dtype | None:
    """The autocast dtype for training on ``device``; ``None`` = full precision.

    Mixed precision runs on CUDA only. ``auto`` picks bf16 where the GPU supports it (no gradient
    scaling needed, fp32's range) and fp16 otherwise; fp16 needs a ``GradScaler`` (see
    :func:`needs_grad_scaler`).
    """
    if kind not in AMP_DTYPES:
        raise ValueError(f"AMP dtype {kind!r}; allowed: {', '.join(AMP_DTYPES)}")
    if not enabled or device.type != "cuda":
        return None
    if kind == "auto":
        kind = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.bfloat16 if kind == "bf16" else torch.float16


def needs_grad_scaler(dtype: torch.dtype | None) -> bool:
    """fp16 gradients underflow without loss scaling; bf16 and fp32 ones do not."""
    return dtype == torch.float16


# ------------------------------------------------------------------------------- the loss module


class NetworkOutputs(NamedTuple):
    """What every loss may need from one forward pass, in the losses' layouts (float32)."""

    wav: Tensor  # enhanced waveform [B, T']
    spec: Tensor  # enhanced spectrum [B, F, N, 2]
    mask: Tensor  # the predicted complex mask [B, F, N, 2]
    clean_spec: Tensor  # the network's own STFT of the target [B, F, N, 2]
    noisy_spec: Tensor


class LossModule(nn.Module):
    """Network + objective, so that DistributedDataParallel sees one forward pass.

    ``forward(noisy [B, T], clean [B, T]) -> dict`` of loss terms (``"loss"`` is minimised). The network
    runs under autocast with ``autocast_dtype`` (on the inputs' device type); STFTs of the targets and
    every loss are computed in float32.
    """

    def __init__(
        self,
        net: nn.Module,
        arch: str,
        loss_kind: str,
        weights: tuple[float, float, float],
        *,
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.net, self.arch, self.autocast_dtype = net, arch, autocast_dtype
        self.kind = spec_of(arch).native_loss if loss_kind == "native" else loss_kind
        self.alpha, self.beta, self.gamma = weights

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)

    def outputs(self, noisy: Tensor, clean: Tensor) -> NetworkOutputs:
        """One forward pass of the network (``forward_outputs``), with the target's and input's spectra.

        FRCRN's outputs are its second stage in its stacked layout; GTCRN's are already ``[B, F, N, 2]``.
        """
        with self._autocast(noisy.device):
            out = self.net.forward_outputs(noisy)
        with torch.no_grad():
            clean_spec, noisy_spec = self.net.stft(clean.float()), self.net.stft(noisy.float())
        if self.arch == "frcrn":
            wav, spec, mask = out.wav_l2, out.spec_l2, out.mask_l2
            spec, mask = L.from_stacked(spec), L.from_stacked(mask)
            clean_spec, noisy_spec = L.from_stacked(clean_spec), L.from_stacked(noisy_spec)
        else:
            wav, spec, mask = out.wav, out.spec, out.mask
        return NetworkOutputs(wav.float(), spec.float(), mask.float(), clean_spec, noisy_spec)

    def forward(self, noisy: Tensor, clean: Tensor) -> dict[str, Tensor]:
        out = self.outputs(noisy, clean)
        clean = clean.float()
        if self.kind == "frcrn_mix":
            return L.frcrn_mix_loss(out.wav, out.mask, clean, out.clean_spec, out.noisy_spec)
        if self.kind == "gtcrn_hybrid":
            return L.gtcrn_hybrid_loss(out.spec, out.clean_spec, out.wav, clean)
        if self.kind == "si_snr":
            sisnr = L.si_snr(estimate=out.wav, reference=clean).mean()
            return {"loss": -sisnr, "sisnr": sisnr.detach()}
        return L.composite_loss(
            out.spec,
            out.clean_spec,
            out.wav,
            clean,
            estimate_mask=out.mask,
            noisy_spec=out.noisy_spec,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
        )
