"""One typed spec per architecture: the facts everyone else reads.

The engine (chunking, pre-roll, working level), the backends (STFT, padding), the fine-tuning objective
(parameter groups, native loss), export (input kind) and every command's ``--model`` choices come from
here. A third architecture means one more :class:`ArchSpec` below, one module with its ``nn.Module``, and
one line in :mod:`denoise_models.registry`.

The constants are duplicated nowhere: a test checks each spec against its network's own class attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EngineDefaults:
    """How the engine feeds the network by default (all overridable in ``DenoiserConfig``)."""

    # Samples per forward pass, in seconds at the network's rate; memory follows this, never the file.
    chunk_seconds: float
    # Context a chunk sees before its output is used (recurrent state needs time to settle); 0 for
    # a network run with carried state, where every chunk continues where the last one stopped.
    preroll_seconds: float
    # RMS level (dBFS) the network was trained at; None = feed the input as it is.
    working_level_dbfs: float | None


@dataclass(frozen=True)
class ParamGroups:
    """Regular expressions over ``named_parameters()`` names, for freezing policies in fine-tuning."""

    encoders: str  # the analysis side ("freeze = encoders")
    mask_layers: str  # the layers that produce the mask (the only ones trained with "freeze = backbone")
    fixed: str  # fixed transforms that are never trained (STFT kernels, filterbanks)


@dataclass(frozen=True)
class ArchSpec:
    """Everything about one architecture that code outside its ``nn.Module`` needs to know."""

    name: str
    sample_rate: int  # Hz the network runs at
    n_fft: int
    win_length: int
    hop_length: int  # frame shift (samples); inputs are padded to a multiple of it
    min_samples: int  # shortest input the forward pass accepts
    # Where the STFT lives for an exported graph: "wav" = inside it (waveform in/out), "spec" = outside
    # (the runtime computes a centred, reflect-padded STFT and the graph maps spectrum to spectrum).
    export_io: Literal["wav", "spec"]
    # True when the network can run frame by frame with carried state (``stream_init``/``stream_step``),
    # so chunked and streamed output equal the whole-file output.
    stateful: bool
    native_loss: str  # the loss the released checkpoint was trained with (see denoise.finetune)
    engine: EngineDefaults
    params: ParamGroups
    # Samples (at ``sample_rate``) by which a stateful stream's output lags its input: output sample t is the
    # network's output for input sample t - stream_delay. None when the network cannot stream.
    stream_delay: int | None = None

    @property
    def frame_seconds(self) -> float:
        return self.hop_length / self.sample_rate


FRCRN = ArchSpec(
    name="frcrn",
    sample_rate=16000,
    n_fft=640,
    win_length=640,
    hop_length=320,
    min_samples=640,
    export_io="wav",
    stateful=False,
    native_loss="frcrn_mix",
    # 10 s chunks keep FRCRN's peak memory near 1 GB on CPU; ModelScope trains at -25 dBFS. Its SE blocks
    # pool over the whole chunk, so chunks are cross-faded (no carried state).
    engine=EngineDefaults(chunk_seconds=10.0, preroll_seconds=0.0, working_level_dbfs=-25.0),
    params=ParamGroups(
        encoders=r"^unet2?\.(encoders|fsmn_enc|se_layers_enc)\.",
        mask_layers=r"^unet2?\.(decoders|fsmn_dec|se_layers_dec|linear)\.",
        fixed=r"^i?stft\.",
    ),
)

GTCRN = ArchSpec(
    name="gtcrn",
    sample_rate=16000,
    n_fft=512,
    win_length=512,
    hop_length=256,
    min_samples=512 // 2 + 1,  # the centred STFT reflects n_fft // 2 samples on each side
    export_io="spec",
    stateful=True,
    native_loss="gtcrn_hybrid",
    # GTCRN is tiny; long chunks mean fewer seams. Without carried state its GRUs need a pre-roll whose
    # output is discarded. Its official inference feeds raw input (no working level).
    engine=EngineDefaults(chunk_seconds=30.0, preroll_seconds=4.0, working_level_dbfs=None),
    params=ParamGroups(
        encoders=r"^(erb|sfe|encoder)\.",
        mask_layers=r"^decoder\.",
        fixed=r"^erb\.",
    ),
    # n_fft - 1: an output sample is final once both frames that cover it are complete (31.9 ms).
    stream_delay=511,
)

SPECS: dict[str, ArchSpec] = {spec.name: spec for spec in (FRCRN, GTCRN)}


def spec_of(arch: str) -> ArchSpec:
    """The spec of ``arch`` (case-insensitive); a one-line ``ValueError`` naming the choices otherwise."""
    try:
        return SPECS[arch.lower()]
    except KeyError:
        raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(SPECS)}") from None
