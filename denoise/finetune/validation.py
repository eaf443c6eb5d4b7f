"""Validation of a fine-tune: the network in eval mode on fixed held-out pairs, scored as eval scores.

SI-SNR and PESQ-WB are :mod:`denoise.metrics` (the numbers ``denoise eval`` reports). Where SI-SNR is
undefined (a silent estimate from a broken model, a perfect one) the loss's eps-bounded SI-SNR is used
instead, so a model that outputs silence scores very low rather than being left out of the mean.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import denoise.finetune.losses as L
from denoise import metrics
from denoise.finetune.objective import evaluating

# (noisy, clean) float32 16 kHz arrays of equal length
Items = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class Scores:
    """Validation result: mean SI-SNR (dB) over all items, mean PESQ-WB over the first few (NaN if none)."""

    si_snr: float
    pesq: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"si_snr": self.si_snr, "pesq": self.pesq}

    def __str__(self) -> str:
        pesq = f"{self.pesq:.3f}" if math.isfinite(self.pesq) else "n/a"
        return f"SI-SNR {self.si_snr:.2f} dB, PESQ-WB {pesq}"


def _bounded_si_snr(*, estimate: np.ndarray, reference: np.ndarray) -> float:
    est, ref = torch.from_numpy(estimate)[None].double(), torch.from_numpy(reference)[None].double()
    return float(L.si_snr(estimate=est, reference=ref)[0])


def score_pairs(pairs: Items, pesq_items: int = 0) -> Scores:
    """Mean SI-SNR over ``(estimate, clean)`` 16 kHz pairs and mean PESQ-WB over the first ``pesq_items``."""
    sisnr: list[float] = []
    pesq_scores: list[float] = []
    for k, (estimate, clean) in enumerate(pairs):
        est, ref = estimate.astype(np.float64), clean.astype(np.float64)
        try:
            value = metrics.si_snr(estimate=est, reference=ref)
        except metrics.MetricUnavailable:
            value = float("nan")
        sisnr.append(value if math.isfinite(value) else _bounded_si_snr(estimate=est, reference=ref))
        if k < pesq_items:
            with contextlib.suppress(Exception):  # PESQ refuses e.g. a reference without speech
                pesq_scores.append(metrics.pesq_wb(estimate=est, reference=ref))
    return Scores(float(np.mean(sisnr)), float(np.mean(pesq_scores)) if pesq_scores else float("nan"))


def validate(
    net: nn.Module, items: Items, *, device: torch.device, pesq_items: int = 0, batch_size: int = 8
) -> Scores:
    """Score ``net`` in eval mode on fixed ``(noisy, clean)`` pairs; every module's mode is restored after."""
    pairs: Items = []
    with evaluating(net):
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            noisy = torch.from_numpy(np.stack([n for n, _ in chunk])).to(device)
            enhanced = net(noisy).float().cpu().numpy()
            pairs += [(enhanced[k], clean) for k, (_, clean) in enumerate(chunk)]
    return score_pairs(pairs, pesq_items)


def input_scores(items: Items, pesq_items: int = 0) -> Scores:
    """The same scores for the unprocessed noisy inputs (the floor the checkpoint is measured from)."""
    return score_pairs(items, pesq_items)
