"""GTCRN: grouped temporal convolutional recurrent network for speech enhancement.

A clean re-implementation of the network released in Xiaobin-Rong/gtcrn (MIT): ultra-light
(48,245 parameters of which 23,669 trainable, ~33 MMAC/s) complex-ratio-mask enhancement at 16 kHz.
Module and parameter names follow the official code exactly so that the released checkpoints
(``{'model': state_dict}``) load with ``strict=True`` and reproduce the published output.

Data flow of :meth:`GTCRN.forward_spec` (B = batch, T = frames, C = channels, F = frequency):

    spec [B, 257, T, 2] -> (|X|, Re X, Im X) [B, 3, T, 257]
      -> ERB band merge   [B, 3, T, 129]  (bins 0..64 kept, 192 upper bins -> 64 ERB bands)
      -> SFE              [B, 9, T, 129]  (each bin stacked with its two neighbours)
      -> encoder          [B, 16, T, 33]  (2 strided conv blocks + 3 dilated GT-conv blocks)
      -> 2 x DPGRNN       [B, 16, T, 33]  (grouped dual-path GRU: across frequency, then time)
      -> decoder          [B, 2, T, 129]  (mirror of the encoder with skip connections, tanh)
      -> ERB band split   [B, 2, T, 257]  = complex ratio mask
      -> mask * spec      [B, 257, T, 2]

Everything along time is causal (left padding only; uni-directional GRUs along time), so the
network also runs on pieces of a signal with its state carried over (:meth:`GTCRN.stream_step` on STFT
frames, :class:`GTCRNStream` on waveform blocks), and the pieces' output equals the whole-signal output.
The layers are in :mod:`denoise_models.gtcrn_layers` and :mod:`denoise_models.gtcrn_rnn`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import torch
from torch import Tensor, nn

from denoise_models.gtcrn_layers import (
    ERB,
    SFE,
    BlockStates,
    Decoder,
    Encoder,
    GTConvBlock,
    Mask,
    conv_transpose_as_conv,
    erb_filterbank,
)
from denoise_models.gtcrn_rnn import DPGRNN

# The layers are re-exported: they are part of this module's public surface (tests, export).
__all__ = [
    "GTCRN",
    "SFE",
    "GTCRNOutputs",
    "GTCRNState",
    "GTCRNStream",
    "GTConvBlock",
    "conv_transpose_as_conv",
    "erb_filterbank",
]


# --------------------------------------------------------------------------- the network


class GTCRNOutputs(NamedTuple):
    """What :meth:`GTCRN.forward_outputs` returns. ``spec`` and ``mask`` are ``[B, 257, frames, 2]``
    (real, imaginary last, as :meth:`GTCRN.stft`): ``spec = mask * stft(input)`` as complex numbers;
    ``wav = istft(spec)`` is ``forward(input)``."""

    wav: Tensor
    spec: Tensor
    mask: Tensor


class GTCRNState(NamedTuple):
    """Everything GTCRN remembers from past frames (see :meth:`GTCRN.stream_init`); treat as opaque.

    ``blocks``: per GT-conv block (3 encoder, then 3 decoder), its depthwise conv's input over the last
    ``2 * dilation`` frames ``[B, 16, 2d, 33]`` and TRA's GRU state ``[1, B, 16]``. ``inter``: per DPGRNN,
    the two group GRUs along time ``[1, B * 33, 8]``. The intra GRUs (across frequency) and all other
    layers see one frame at a time and keep nothing.
    """

    blocks: BlockStates
    inter: tuple[tuple[Tensor, Tensor], ...]

    def batch_first(self) -> list[Tensor]:
        """Every tensor of the state with the batch axis first, in a fixed order: the layout an exported
        stream graph takes and returns (its state inputs then all share one dynamic batch axis)."""
        batch = self.blocks[0][0].shape[0]
        flat: list[Tensor] = []
        for history, tra in self.blocks:
            flat += [history, tra[0]]  # [B, 16, 2d, 33], [B, 16]
        for h1, h2 in self.inter:
            flat += [h[0].reshape(batch, -1, h.shape[-1]) for h in (h1, h2)]  # [B, 33, 8]
        return flat

    @classmethod
    def from_batch_first(cls, flat: list[Tensor]) -> GTCRNState:
        """The inverse of :meth:`batch_first`."""
        n_blocks = len(flat) - 4
        blocks = tuple((flat[i], flat[i + 1][None]) for i in range(0, n_blocks, 2))
        inter = tuple(
            (flat[i].flatten(0, 1)[None], flat[i + 1].flatten(0, 1)[None]) for i in (n_blocks, n_blocks + 2)
        )
        return cls(blocks, inter)


class GTCRN(nn.Module):
    """GTCRN in its released configuration, with the STFT framing of the official ``infer.py``.

    ``forward(wav)`` maps float32 waveforms ``[B, samples]`` at 16 kHz to enhanced waveforms
    ``[B, hop_length * (samples // hop_length)]`` (the STFT is centred, and the iSTFT without a
    ``length`` returns ``(frames - 1) * hop`` samples, exactly as the official script does).
    ``forward_spec`` is the official network itself and the part to export to ONNX.
    """

    sample_rate = 16000
    n_fft = 512
    hop_length = 256
    win_length = 512
    n_freqs = n_fft // 2 + 1
    #: Shortest input accepted by :meth:`forward` / :meth:`stft`: the centred STFT reflect-pads
    #: ``n_fft // 2`` samples on each side, which needs more than that many samples.
    min_samples = n_fft // 2 + 1
    #: Latency (samples) of :class:`GTCRNStream` at a fixed delay: an output sample needs the two frames
    #: that cover it, the later of which ends up to ``n_fft - 1`` samples after it.
    stream_delay = n_fft - 1

    def __init__(self) -> None:
        super().__init__()
        self.erb = ERB(65, 64, self.n_fft)
        self.sfe = SFE(3, 1)
        self.encoder = Encoder()
        self.dpgrnn1 = DPGRNN(16, 33, 16)
        self.dpgrnn2 = DPGRNN(16, 33, 16)
        self.decoder = Decoder()
        self.mask = Mask()
        # sqrt of a periodic Hann window: analysis * synthesis = Hann, which overlap-adds to one at
        # 50 % overlap. Not persistent, so it never appears in (or is required from) a state dict.
        window = torch.hann_window(self.win_length, periodic=True).sqrt()
        self.register_buffer("window", window, persistent=False)

    # ---- framing

    def stft(self, wav: Tensor) -> Tensor:
        """Waveform ``[B, samples]`` -> real-view spectrum ``[B, 257, 1 + samples // 256, 2]``.

        Raises:
            ValueError: if ``wav`` is not 2-D or is shorter than :attr:`min_samples`.
        """
        if wav.dim() != 2:
            raise ValueError(f"GTCRN expects a waveform batch [batch, samples], got shape {tuple(wav.shape)}")
        if wav.shape[-1] < self.min_samples:
            raise ValueError(
                f"GTCRN needs at least {self.min_samples} samples per input "
                f"({self.min_samples / self.sample_rate * 1e3:.1f} ms at {self.sample_rate} Hz), "
                f"got {wav.shape[-1]}"
            )
        spec = torch.stft(
            wav,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window.to(wav.dtype),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        return torch.view_as_real(spec)

    def istft(self, spec: Tensor, length: int | None = None) -> Tensor:
        """Real-view spectrum ``[B, 257, frames, 2]`` -> waveform ``[B, length or (frames - 1) * 256]``."""
        return torch.istft(
            torch.view_as_complex(spec.contiguous()),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window.to(spec.dtype),
            center=True,
            length=length,
        )

    # ---- network

    def forward(self, wav: Tensor) -> Tensor:
        """Enhance waveforms: ``[B, samples]`` float32 at 16 kHz -> ``[B, 256 * (samples // 256)]``."""
        return self.istft(self.forward_spec(self.stft(wav)))

    def forward_spec(self, spec: Tensor) -> Tensor:
        """The official network: noisy ``[B, 257, frames, 2]`` -> enhanced ``[B, 257, frames, 2]``.

        The last axis holds (real, imaginary) of an STFT framed as :meth:`stft` does. Any number of
        frames >= 1 works; each output frame depends only on the current and past input frames.
        """
        return self._enhance(spec, None)[0]

    def forward_outputs(self, wav: Tensor) -> GTCRNOutputs:
        """Enhanced waveform, spectrum and the complex ratio mask (see :class:`GTCRNOutputs`)."""
        spec, mask, _ = self._enhance(self.stft(wav), None)
        return GTCRNOutputs(self.istft(spec), spec, mask)

    # ---- streaming: the same network, its state carried from call to call

    def open_stream(self, batch: int) -> GTCRNStream:
        """A waveform-level stream of ``batch`` signals (see :class:`GTCRNStream`)."""
        return GTCRNStream(self, batch)

    def stream_init(
        self, batch: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GTCRNState:
        """The state before the first frame of ``batch`` signals (all zeros, as :meth:`forward_spec` starts)."""
        device = self.window.device if device is None else device
        dtype = dtype or torch.float32
        width = self.dpgrnn1.width
        gt_blocks = [
            b for b in (*self.encoder.en_convs, *self.decoder.de_convs) if isinstance(b, GTConvBlock)
        ]
        return GTCRNState(
            blocks=tuple(
                (
                    torch.zeros(batch, b.hidden_channels, b.pad_size, width, device=device, dtype=dtype),
                    torch.zeros(1, batch, b.tra.att_gru.hidden_size, device=device, dtype=dtype),
                )
                for b in gt_blocks
            ),
            inter=tuple(
                (
                    torch.zeros(1, batch * width, g.rnn1.hidden_size, device=device, dtype=dtype),
                    torch.zeros(1, batch * width, g.rnn2.hidden_size, device=device, dtype=dtype),
                )
                for g in (self.dpgrnn1.inter_rnn, self.dpgrnn2.inter_rnn)
            ),
        )

    def stream_step(self, spec_frames: Tensor, state: GTCRNState) -> tuple[Tensor, GTCRNState]:
        """Enhance the next frames ``[B, 257, n, 2]`` (n >= 0) of a signal -> (``[B, 257, n, 2]``, new state).

        Feeding a signal's frames in pieces of any sizes, starting from :meth:`stream_init`, gives
        :meth:`forward_spec` of all its frames (up to float rounding).
        """
        if spec_frames.shape[2] == 0:
            return spec_frames, state
        spec, _, state = self._enhance(spec_frames, state)
        return spec, state

    def _enhance(self, spec: Tensor, state: GTCRNState | None) -> tuple[Tensor, Tensor, GTCRNState]:
        """(enhanced spectrum, mask, both ``[B, 257, T, 2]``; state after the last frame) of ``spec``."""
        # The check is skipped while tracing so that exported graphs stay shape-generic.
        tracing = torch.jit.is_tracing() or torch.jit.is_scripting()
        if not tracing and (spec.dim() != 4 or spec.shape[1] != self.n_freqs or spec.shape[3] != 2):
            raise ValueError(
                f"forward_spec expects [batch, {self.n_freqs}, frames, 2], got {tuple(spec.shape)}"
            )
        spec_ri = spec.permute(0, 3, 2, 1)  # [B, 2, T, F]
        magnitude = torch.sqrt(spec_ri.pow(2).sum(dim=1, keepdim=True) + 1e-12)  # eps: finite gradient at 0
        feat = torch.cat([magnitude, spec_ri], dim=1)  # [B, 3, T, 257]: |X|, Re X, Im X

        n_enc = len(self.encoder.en_convs) - 2  # GT-conv blocks in the encoder (the first two are plain)
        blocks, inter = (None, (None, None)) if state is None else (state.blocks, state.inter)
        feat = self.sfe(self.erb.bm(feat))  # [B, 9, T, 129]
        feat, skips, enc_states = self.encoder(feat, None if blocks is None else blocks[:n_enc])
        feat, inter1 = self.dpgrnn1(feat, inter[0])
        feat, inter2 = self.dpgrnn2(feat, inter[1])
        mask, dec_states = self.decoder(feat, skips, None if blocks is None else blocks[n_enc:])
        mask = self.erb.bs(mask)  # [B, 2, T, 257]
        enhanced = self.mask(mask, spec_ri).permute(0, 3, 2, 1)  # [B, 257, T, 2]
        return enhanced, mask.permute(0, 3, 2, 1), GTCRNState(enc_states + dec_states, (inter1, inter2))

    # ---- checkpoints

    @classmethod
    def remap_state_dict(cls, state_dict: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """Map a checkpoint's keys onto this module's names.

        Module names are identical to the official ones, so an official ``ckpt['model']`` passes
        through unchanged. The only rewrite is stripping a ``module.`` prefix that
        ``nn.DataParallel`` / ``DistributedDataParallel`` training leaves on every key.

        Returns:
            (state dict for ``load_state_dict(strict=True)``, human-readable notes on any change).
        """
        notes: list[str] = []
        prefix = re.compile(r"^(module\.)+")
        if state_dict and all(prefix.match(key) for key in state_dict):
            notes.append(f"stripped the 'module.' prefix (DataParallel) from {len(state_dict)} keys")
            state_dict = {prefix.sub("", key): value for key, value in state_dict.items()}
        return dict(state_dict), notes


class GTCRNStream:
    """Waveform blocks in, :meth:`GTCRN.forward` of the whole signal out, as soon as each sample is final.

    The STFT is framed exactly as :meth:`GTCRN.stft` does (centred, reflect-padded at both ends) and
    overlap-added as :meth:`GTCRN.istft` does, with the network's state carried between calls. Output
    sample ``n`` is final once input sample ``n + n_fft - 1 - n % hop`` has arrived (its two frames are
    complete), so the latency is at most :attr:`GTCRN.stream_delay` samples. Concatenating ``push``
    results and ``finish()`` gives ``forward(whole input)`` (``hop * (samples // hop)`` samples).

    Args:
        net: the network (eval mode; call under ``torch.inference_mode`` for speed).
        batch: signals streamed side by side (rows of every block).
    """

    def __init__(self, net: GTCRN, batch: int) -> None:
        self.net = net
        self.window = net.window
        self.n_fft, self.hop = net.n_fft, net.hop_length
        w2 = self.window.double().pow(2)
        # torch.istft's envelope: the squared windows that overlap on one hop (1 up to rounding).
        self._envelope = (w2[: self.hop] + w2[self.hop :]).to(self.window.dtype)
        self._state = net.stream_init(batch)
        self._pending = self.window.new_zeros(batch, 0)  # input not yet framed (padded coordinates)
        self._tail = self.window.new_zeros(batch, 0)  # the last hop + 1 input samples (end reflection)
        self._overlap = self.window.new_zeros(batch, self.n_fft - self.hop)  # 2nd half of the last frame
        self._seen = 0  # input samples pushed
        self._started = False  # the start's reflection is in place
        self._skip = self.hop  # output still to drop: the first hop lies in the centring pad istft removes

    def push(self, block: Tensor) -> Tensor:
        """Feed the next input samples ``[B, n]`` (any n >= 0) -> the output samples now final ``[B, m]``."""
        self._seen += block.shape[1]
        self._tail = torch.cat([self._tail, block], dim=1)[:, -(self.hop + 1) :]
        self._pending = torch.cat([self._pending, block], dim=1)
        if not self._started:
            if self._seen <= self.n_fft // 2:  # the start's reflection needs samples 1 .. n_fft // 2
                return self._pending[:, :0]
            self._pending = torch.cat(
                [self._pending[:, 1 : self.n_fft // 2 + 1].flip(1), self._pending], dim=1
            )
            self._started = True
        return self._drain()

    def finish(self) -> Tensor:
        """End of input: reflect-pad the end as :meth:`GTCRN.stft` does and return the remaining output."""
        if not self._started:
            raise ValueError(f"GTCRN needs at least {self.net.min_samples} samples, got {self._seen}")
        end = self._tail[:, -(self.n_fft // 2 + 1) : -1].flip(1)
        self._pending = torch.cat([self._pending, end], dim=1)
        return self._drain()

    def _drain(self) -> Tensor:
        n_frames = (self._pending.shape[1] - self.n_fft) // self.hop + 1
        if n_frames <= 0:
            return self._pending[:, :0]
        used = self.n_fft + (n_frames - 1) * self.hop
        spec = torch.stft(
            self._pending[:, :used],
            self.n_fft,
            self.hop,
            self.n_fft,
            self.window,
            center=False,
            return_complex=True,
        )
        self._pending = self._pending[:, n_frames * self.hop :]
        enhanced, self._state = self.net.stream_step(torch.view_as_real(spec), self._state)
        frames = torch.fft.irfft(torch.view_as_complex(enhanced.contiguous()).transpose(1, 2), n=self.n_fft)
        frames = frames * self.window  # [B, n, n_fft]
        # Overlap-add: each hop is this frame's first half plus the previous frame's second half.
        previous = torch.cat([self._overlap[:, None], frames[:, :-1, self.hop :]], dim=1)
        out = ((frames[:, :, : self.hop] + previous) / self._envelope).flatten(1)
        self._overlap = frames[:, -1, self.hop :]
        out, self._skip = out[:, self._skip :], 0
        return out
