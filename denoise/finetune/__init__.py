"""Fine-tuning FRCRN / GTCRN on your own noise (``denoise finetune``).

- :mod:`.config`: the TOML configuration (:class:`FinetuneConfig`).
- :mod:`.datasets`: on-the-fly mixing or noisy/clean pairs, resumable and shardable.
- :mod:`.losses` and :mod:`.objective`: the losses, freezing, train/eval modes, AMP precision.
- :mod:`.validation`: the held-out score that decides which weights are kept.
- :mod:`.trainer`: the loop, its state, resume and DDP (:class:`Trainer`, :func:`finetune`);
  :mod:`.state` its bookkeeping, :mod:`.distributed` the process helpers, :mod:`.runlog` the logs.
- :mod:`.smoke`: a few steps of the real trainer on synthetic audio (the GPU check calls it).
"""

from typing import Any

from denoise.finetune.config import ConfigError, FinetuneConfig
from denoise.finetune.state import FinetuneResult
from denoise.finetune.trainer import Trainer, finetune

__all__ = ["ConfigError", "FinetuneConfig", "FinetuneResult", "Trainer", "finetune", "smoke_run"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `python -m denoise.finetune.smoke` runs a module not yet imported.
    if name == "smoke_run":
        from denoise.finetune.smoke import smoke_run

        return smoke_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
