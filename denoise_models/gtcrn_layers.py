"""GTCRN's layers: ERB band merge/split, subband features, GT-conv blocks, encoder and decoder.

Module and parameter names follow the official code exactly (see :mod:`denoise_models.gtcrn`, which
assembles them). Layers that look back in time take an optional state and return their new one, so
the network can continue a signal where the previous call stopped; ``None`` means the start of a
signal (zeros), which is what the offline forward pass uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from denoise_models.gtcrn_rnn import STACKED_MAX_STEPS, stacked_gru

# --------------------------------------------------------------------------- ERB filterbank


def _hz_to_erb(freq_hz: np.ndarray | float) -> np.ndarray | float:
    """Frequency in Hz -> ERB-rate scale, with the constants the released model was trained with."""
    return 21.4 * np.log10(0.00437 * freq_hz + 1.0)


def _erb_to_hz(erb: np.ndarray | float) -> np.ndarray | float:
    """Inverse of :func:`_hz_to_erb`."""
    return (10.0 ** (erb / 21.4) - 1.0) / 0.00437


def erb_filterbank(
    n_low: int = 65, n_bands: int = 64, n_fft: int = 512, high_hz: float = 8000.0, sample_rate: int = 16000
) -> Tensor:
    """Triangular ERB filters mapping the upper STFT bins onto ``n_bands`` bands.

    Bins ``0 .. n_low-1`` are passed through unchanged by the network; the remaining
    ``n_fft//2 + 1 - n_low`` bins are merged into ``n_bands`` overlapping triangles whose centres
    are equally spaced on the ERB scale between bin ``n_low`` and ``high_hz``. Adjacent triangles
    sum to one, and the last one is a half-triangle rising to ``high_hz``.

    Returns:
        float32 tensor ``[n_bands, n_fft//2 + 1 - n_low]`` (64 x 192 for the released model).
    """
    n_freqs = n_fft // 2 + 1
    low_hz = n_low / n_fft * sample_rate
    centres = np.linspace(_hz_to_erb(low_hz), _hz_to_erb(high_hz), n_bands)
    bins = np.round(_erb_to_hz(centres) / sample_rate * n_fft).astype(np.int64)
    eps = 1e-12  # keeps empty triangles (coinciding centres) finite; same value as at training time

    def rising(lo: int, hi: int) -> np.ndarray:
        return (np.arange(lo, hi) - lo + eps) / (hi - lo + eps)

    def falling(lo: int, hi: int) -> np.ndarray:
        return (hi - np.arange(lo, hi) + eps) / (hi - lo + eps)

    filters = np.zeros((n_bands, n_freqs), dtype=np.float32)
    filters[0, bins[0] : bins[1]] = falling(bins[0], bins[1])
    for band in range(1, n_bands - 1):
        filters[band, bins[band - 1] : bins[band]] = rising(bins[band - 1], bins[band])
        filters[band, bins[band] : bins[band + 1]] = falling(bins[band], bins[band + 1])
    # The last band complements its neighbour up to and including the top bin.
    top = slice(bins[-2], bins[-1] + 1)
    filters[-1, top] = 1.0 - filters[-2, top]
    return torch.from_numpy(np.abs(filters[:, n_low:]).copy())


class ERB(nn.Module):
    """ERB band merge (257 bins -> 129 bands) and band split (129 -> 257), fixed weights.

    Both matrices are stored in checkpoints as non-trainable parameters (``requires_grad=False``),
    which is why they count towards the 48,245 parameters but not the 23,669 trainable ones.
    """

    def __init__(self, n_low: int = 65, n_bands: int = 64, n_fft: int = 512) -> None:
        super().__init__()
        filters = erb_filterbank(n_low, n_bands, n_fft)
        n_high = n_fft // 2 + 1 - n_low
        self.n_low = n_low
        self.erb_fc = nn.Linear(n_high, n_bands, bias=False)
        self.ierb_fc = nn.Linear(n_bands, n_high, bias=False)
        # Separate storage for the two matrices so that loading one never silently changes the other.
        self.erb_fc.weight = nn.Parameter(filters.clone(), requires_grad=False)
        self.ierb_fc.weight = nn.Parameter(filters.T.contiguous(), requires_grad=False)

    def bm(self, x: Tensor) -> Tensor:
        """Band merge: ``[..., 257]`` -> ``[..., n_low + n_bands]``."""
        return torch.cat([x[..., : self.n_low], self.erb_fc(x[..., self.n_low :])], dim=-1)

    def bs(self, x: Tensor) -> Tensor:
        """Band split: ``[..., n_low + n_bands]`` -> ``[..., 257]``."""
        return torch.cat([x[..., : self.n_low], self.ierb_fc(x[..., self.n_low :])], dim=-1)


# --------------------------------------------------------------------------- building blocks


class SFE(nn.Module):
    """Subband feature extraction: stack every frequency bin with its ``kernel_size - 1`` neighbours.

    ``[B, C, T, F]`` -> ``[B, C * kernel_size, T, F]``; output channel ``c * k + j`` holds input
    channel ``c`` shifted by ``j - (k-1)/2`` bins (zero beyond the edges). This is the ordering of
    ``nn.Unfold(kernel_size=(1, k), padding=(0, (k-1)//2))``, written with pad + slices because that
    exports to ONNX as plain Pad/Slice/Concat.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        if stride != 1:
            raise ValueError("SFE supports stride 1 only (the released configuration)")
        self.kernel_size = kernel_size

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, C, T, F]`` -> ``[B, C * kernel_size, T, F]``."""
        k = self.kernel_size
        n_freqs = x.shape[-1]
        padded = F.pad(x, [(k - 1) // 2, (k - 1) // 2])
        shifted = torch.stack([padded[..., j : j + n_freqs] for j in range(k)], dim=2)  # [B, C, k, T, F]
        return shifted.flatten(1, 2)


class TRA(nn.Module):
    """Temporal recurrent attention: a per-channel gain in (0, 1) from a causal GRU over frame energies."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.att_gru = nn.GRU(channels, channels * 2, num_layers=1, batch_first=True)
        self.att_fc = nn.Linear(channels * 2, channels)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x``: ``[B, C, T, F]`` -> (same shape, each (channel, frame) scaled by its attention; GRU state).

        ``state`` (``[1, B, 2C]``, None = zeros) is the GRU's hidden state after the frame before ``x``.
        """
        energy = x.pow(2).mean(dim=-1).transpose(1, 2)  # [B, T, C]
        # nn.GRU offline (bit-identical), over many frames, and when exporting (ONNX has one GRU op)
        if state is None or energy.shape[1] > STACKED_MAX_STEPS or torch.jit.is_tracing():
            att, state = self.att_gru(energy, state)
        else:  # streaming a few frames: stacked_gru is several times faster
            out, last = stacked_gru([(energy, self.att_gru, "")], state)
            att, state = out[0], last
        att = torch.sigmoid(self.att_fc(att))  # [B, T, C]
        return x * att.transpose(1, 2).unsqueeze(-1), state


class ConvBlock(nn.Module):
    """(Transposed) convolution -> batch norm -> PReLU (or tanh for the final mask layer)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        groups: int = 1,
        use_deconv: bool = False,
        is_last: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act: nn.Module = nn.Tanh() if is_last else nn.PReLU()

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, C_in, T, F_in]`` -> ``[B, C_out, T, F_out]``."""
        return self.act(self.bn(self.conv(x)))


def conv_transpose_as_conv(layer: nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """Evaluate a stride-1 ``ConvTranspose2d`` as the equivalent ordinary convolution.

    Same result (up to float rounding), but PyTorch's CPU kernel for grouped/depthwise transposed
    convolutions is ~15x slower than the direct one. A stride-1 transposed conv equals a conv with
    the kernel flipped, input/output channels swapped within each group, and padding
    ``dilation * (kernel - 1) - padding``. The checkpoint layout (``layer.weight``) is untouched.
    """
    groups = layer.groups
    c_in, c_out_g, kh, kw = layer.weight.shape  # transposed layout: [in, out / groups, kh, kw]
    weight = (
        layer.weight.reshape(groups, c_in // groups, c_out_g, kh, kw)
        .transpose(1, 2)
        .reshape(groups * c_out_g, c_in // groups, kh, kw)
        .flip(2, 3)
    )
    padding = [d * (k - 1) - p for d, k, p in zip(layer.dilation, (kh, kw), layer.padding, strict=True)]
    return F.conv2d(x, weight, layer.bias, 1, padding, layer.dilation, groups)


def _check_stride1_transposed(layer: nn.ConvTranspose2d) -> None:
    """:func:`conv_transpose_as_conv` covers stride 1, no output padding, padding within the kernel span."""
    spans = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
    if (
        tuple(layer.stride) != (1, 1)
        or any(layer.output_padding)
        or any(p > s for p, s in zip(layer.padding, spans, strict=True))
    ):
        raise ValueError(f"unsupported transposed convolution for the conv rewrite: {layer}")


class GTConvBlock(nn.Module):
    """Group temporal convolution block (ShuffleNetV2-style).

    Half of the channels go through SFE -> 1x1 conv -> causal dilated depthwise 3x3 conv -> 1x1 conv
    -> TRA; the other half is passed through; the halves are then interleaved (channel shuffle).
    Causality: ``(kernel_t - 1) * dilation_t`` frames of zeros are padded on the left only. The
    decoder variant uses transposed convolutions whose time padding crops the same amount, so both
    variants map T frames to T frames causally. Those stride-1 transposed convs are evaluated as
    ordinary convs (:func:`conv_transpose_as_conv`) for speed; their parameters keep the official
    transposed layout.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        use_deconv: bool = False,
    ) -> None:
        super().__init__()
        conv = nn.ConvTranspose2d if use_deconv else nn.Conv2d
        half = in_channels // 2
        self.pad_size = (kernel_size[0] - 1) * dilation[0]
        self.hidden_channels = hidden_channels

        self.sfe = SFE(kernel_size=3, stride=1)
        self.point_conv1 = conv(half * 3, hidden_channels, 1)
        self.point_bn1 = nn.BatchNorm2d(hidden_channels)
        self.point_act = nn.PReLU()
        self.depth_conv = conv(
            hidden_channels,
            hidden_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=hidden_channels,
        )
        self.depth_bn = nn.BatchNorm2d(hidden_channels)
        self.depth_act = nn.PReLU()
        self.point_conv2 = conv(hidden_channels, half, 1)
        self.point_bn2 = nn.BatchNorm2d(half)
        self.tra = TRA(half)
        self.use_deconv = use_deconv
        if use_deconv:
            for layer in (self.point_conv1, self.depth_conv, self.point_conv2):
                _check_stride1_transposed(layer)

    def _conv(self, layer: nn.Module, x: Tensor) -> Tensor:
        return conv_transpose_as_conv(layer, x) if self.use_deconv else layer(x)

    @staticmethod
    def shuffle(x1: Tensor, x2: Tensor) -> Tensor:
        """Interleave two ``[B, C, T, F]`` tensors channel-wise -> ``[B, 2C, T, F]`` (x1[0], x2[0], ...)."""
        return torch.stack([x1, x2], dim=2).flatten(1, 2)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x``: ``[B, C, T, F]`` -> (``[B, C, T, F]``, state after the last frame).

        ``state`` = (the depthwise conv's input over the ``pad_size`` frames before ``x``
        ``[B, hidden, pad_size, F]``, TRA's GRU state); None = the start of a signal (zeros).
        """
        x1, x2 = torch.chunk(x, 2, dim=1)
        h = self.point_act(self.point_bn1(self._conv(self.point_conv1, self.sfe(x1))))
        # Causal: prepend the past frames (zeros before the start of the signal), never future ones.
        h = F.pad(h, [0, 0, self.pad_size, 0]) if state is None else torch.cat([state[0], h], dim=2)
        history = h[:, :, h.shape[2] - self.pad_size :]
        h = self.depth_act(self.depth_bn(self._conv(self.depth_conv, h)))
        h, tra_state = self.tra(
            self.point_bn2(self._conv(self.point_conv2, h)), None if state is None else state[1]
        )
        return self.shuffle(h, x2), (history, tra_state)


BlockStates = tuple[tuple[Tensor, Tensor], ...]  # one (conv history, TRA state) per GT-conv block


def _run_blocks(
    blocks: nn.ModuleList,
    x: Tensor,
    states: BlockStates | None,
    *,
    skips: list[Tensor] | None = None,
    outs: list[Tensor] | None = None,
) -> tuple[Tensor, BlockStates]:
    """Run ``blocks`` in order (adding ``skips[i]`` to block i's input, appending outputs to ``outs``),
    threading each GT-conv block's state; the other blocks see one frame at a time and have none."""
    new_states: list[tuple[Tensor, Tensor]] = []
    for i, block in enumerate(blocks):
        if skips is not None:
            x = x + skips[i]
        if isinstance(block, GTConvBlock):
            x, state = block(x, None if states is None else states[len(new_states)])
            new_states.append(state)
        else:
            x = block(x)
        if outs is not None:
            outs.append(x)
    return x, tuple(new_states)


class Encoder(nn.Module):
    """129 bands -> 33 via two stride-2 convs, then three GT-conv blocks with time dilation 1, 2, 5."""

    def __init__(self) -> None:
        super().__init__()
        self.en_convs = nn.ModuleList(
            [
                ConvBlock(3 * 3, 16, (1, 5), stride=(1, 2), padding=(0, 2)),
                ConvBlock(16, 16, (1, 5), stride=(1, 2), padding=(0, 2), groups=2),
                GTConvBlock(16, 16, (3, 3), stride=(1, 1), padding=(0, 1), dilation=(1, 1)),
                GTConvBlock(16, 16, (3, 3), stride=(1, 1), padding=(0, 1), dilation=(2, 1)),
                GTConvBlock(16, 16, (3, 3), stride=(1, 1), padding=(0, 1), dilation=(5, 1)),
            ]
        )

    def forward(
        self, x: Tensor, states: BlockStates | None = None
    ) -> tuple[Tensor, list[Tensor], BlockStates]:
        """``x``: ``[B, 9, T, 129]`` -> (``[B, 16, T, 33]``, every block's output for the skips,
        the GT-conv blocks' states; ``states`` None = zeros)."""
        outs: list[Tensor] = []
        x, new_states = _run_blocks(self.en_convs, x, states, outs=outs)
        return x, outs, new_states


class Decoder(nn.Module):
    """Mirror of :class:`Encoder` with transposed convs; the last layer emits a tanh mask."""

    def __init__(self) -> None:
        super().__init__()
        # Transposed convs: time padding 2 * dilation crops the causal left pad back off.
        self.de_convs = nn.ModuleList(
            [
                *(
                    GTConvBlock(16, 16, (3, 3), (1, 1), padding=(2 * d, 1), dilation=(d, 1), use_deconv=True)
                    for d in (5, 2, 1)
                ),
                ConvBlock(16, 16, (1, 5), stride=(1, 2), padding=(0, 2), groups=2, use_deconv=True),
                ConvBlock(16, 2, (1, 5), stride=(1, 2), padding=(0, 2), use_deconv=True, is_last=True),
            ]
        )

    def forward(
        self, x: Tensor, skips: list[Tensor], states: BlockStates | None = None
    ) -> tuple[Tensor, BlockStates]:
        """``x``: ``[B, 16, T, 33]``, ``skips``: encoder outputs -> (mask in ERB domain ``[B, 2, T, 129]``,
        the GT-conv blocks' states)."""
        return _run_blocks(self.de_convs, x, states, skips=list(reversed(skips)))


class Mask(nn.Module):
    """Apply a complex ratio mask: ``(m_r + j m_i) * (X_r + j X_i)`` on ``[B, 2, T, F]`` tensors."""

    def forward(self, mask: Tensor, spec: Tensor) -> Tensor:
        """``mask``, ``spec``: ``[B, 2, T, F]`` (real, imaginary) -> masked spectrum ``[B, 2, T, F]``."""
        real = spec[:, 0] * mask[:, 0] - spec[:, 1] * mask[:, 1]
        imag = spec[:, 1] * mask[:, 0] + spec[:, 0] * mask[:, 1]
        return torch.stack([real, imag], dim=1)
