"""Complex-valued building blocks of FRCRN: convolution, transposed convolution, batch-norm, FSMN, SE.

Two families live here.

**Training / reference blocks** (``Complex*``). A complex tensor is one real tensor of shape
``[2, B, C, F, T]``: index 0 of the leading axis is the real part, index 1 the imaginary part
(``F`` frequency bins, ``T`` frames). Every complex layer is a pair of real layers ``f_re``, ``f_im``
combined the way ModelScope's FRCRN combines them::

    re = f_re(x_re) - f_im(x_im)        im = f_re(x_im) + f_im(x_re)

so biases and FSMN residual paths enter twice; batch-norm is two independent real BNs. Each real
layer is applied once to both parts (the two parts ride on the batch axis), which changes the
layout, never the arithmetic. Parameter names match the released checkpoint (``conv_re``,
``tconv_im``, ``bn_re``, ``fsmn_re_L1.linear`` ...).

**Inference blocks** (``Fused*``), built from trained blocks and used by
:func:`denoise_models.frcrn.optimize_for_inference`. A complex activation is a pair ``(re, im)`` of
``[B, C, T, F]`` channels-last tensors (time as height, frequency as width), and everything that
is linear and fixed at inference time is folded:

* a complex (transposed) convolution uses the 3-multiplication (Gauss) form: three real
  convolutions instead of four, with the following eval-mode batch-norm folded into weights,
  biases and one ``addcmul`` per part;
* the first encoder (1 input channel) and the last decoder (1 output channel), where oneDNN is
  inefficient, become matmuls over gathered kernel taps;
* a complex FSMN runs both parts through ``[L_re; L_im]`` as one matmul, each branch's projection
  as one matmul, and the memory plus identity path as one depthwise convolution per branch, in
  time slices that stay in cache;
* the SE gate runs its four tiny MLPs on the pooled vectors.

They are mathematically identical to the training blocks in eval mode; only float rounding differs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ComplexBatchNorm2d",
    "ComplexConv2d",
    "ComplexConvTranspose2d",
    "ComplexSELayer",
    "ComplexUniDeepFsmn",
    "ComplexUniDeepFsmnL1",
    "FusedComplexConv",
    "FusedComplexConvNarrowIn",
    "FusedComplexConvTransposeNarrow",
    "FusedComplexFsmn",
    "FusedComplexSE",
    "UniDeepFsmn",
]


def _combine(a: Tensor, b: Tensor) -> Tensor:
    """``a = f_re(x)``, ``b = f_im(x)``, both ``[2, ...]`` -> ``[2, ...]`` complex result."""
    return torch.stack((a[0] - b[1], a[1] + b[0]))


def _apply_both(layer: nn.Module, x: Tensor) -> Tensor:
    """Apply a real layer to both parts of ``x`` ``[2, B, ...]`` in one call; result ``[2, B, ...]``."""
    y = layer(x.flatten(0, 1))
    return y.view(2, -1, *y.shape[1:])


# --------------------------------------------------------------------------------------------
# training / reference blocks: complex tensors are [2, B, C, F, T]
# --------------------------------------------------------------------------------------------


class ComplexConv2d(nn.Module):
    """Complex 2-D convolution made of two real ``nn.Conv2d`` (``conv_re``, ``conv_im``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        padding_mode: str = "zeros",
        bias: bool = True,
    ):
        super().__init__()
        kw = dict(stride=stride, padding=padding, padding_mode=padding_mode, bias=bias)
        self.conv_re = nn.Conv2d(in_channels, out_channels, kernel_size, **kw)
        self.conv_im = nn.Conv2d(in_channels, out_channels, kernel_size, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return _combine(_apply_both(self.conv_re, x), _apply_both(self.conv_im, x))


class ComplexConvTranspose2d(nn.Module):
    """Complex 2-D transposed convolution made of two real ``nn.ConvTranspose2d`` (``tconv_re/_im``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
    ):
        super().__init__()
        kw = dict(stride=stride, padding=padding, bias=bias)
        self.tconv_re = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, **kw)
        self.tconv_im = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return _combine(_apply_both(self.tconv_re, x), _apply_both(self.tconv_im, x))


class ComplexBatchNorm2d(nn.Module):
    """Two independent real ``nn.BatchNorm2d``: ``bn_re`` on the real part, ``bn_im`` on the imaginary."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn_re = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)
        self.bn_im = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack((self.bn_re(x[0]), self.bn_im(x[1])))


class UniDeepFsmn(nn.Module):
    """Unidirectional deep FSMN layer on a channels-first tensor ``[N, C, S, W]``.

    ``C`` is the feature axis, ``S`` the sequence axis along which the memory runs, ``W`` a further
    independent axis (``W = 1`` for a plain sequence). With ``p = project(relu(linear(x)))`` over
    the feature axis and ``m`` a causal depthwise filter of ``lorder`` taps along ``S``
    (``m(p)[s] = sum_k w[k] p[s - lorder + 1 + k]``, zeros before the start), the output is
    ``x + (p + m(p))``. Parameter names/shapes as released: ``linear`` (with bias), ``project``
    (no bias), ``conv1`` ``[C, 1, lorder, 1]``.
    """

    def __init__(self, input_dim: int, output_dim: int, lorder: int, hidden_size: int):
        super().__init__()
        if input_dim != output_dim:
            raise ValueError("UniDeepFsmn has a residual path: input_dim must equal output_dim")
        self.lorder = lorder
        self.linear = nn.Linear(input_dim, hidden_size)
        self.project = nn.Linear(hidden_size, output_dim, bias=False)
        self.conv1 = nn.Conv2d(output_dim, output_dim, (lorder, 1), groups=output_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # (no Python arithmetic on sizes, so that traced/exported graphs keep dynamic shapes)
        h = torch.relu(torch.matmul(self.linear.weight, x.flatten(2)) + self.linear.bias[:, None])
        p = torch.matmul(self.project.weight, h).view_as(x)
        mem = self.conv1(F.pad(p, (0, 0, self.lorder - 1, 0)))
        return x + (p + mem)


class ComplexUniDeepFsmnL1(nn.Module):
    """One complex FSMN layer whose memory runs along frequency (each frame on its own).

    Input/output ``[2, B, C, F, T]``; ``fsmn_re_L1`` / ``fsmn_im_L1`` are the two real layers.
    """

    def __init__(self, dim: int = 128, hidden: int = 128, lorder: int = 20):
        super().__init__()
        self.fsmn_re_L1 = UniDeepFsmn(dim, dim, lorder, hidden)
        self.fsmn_im_L1 = UniDeepFsmn(dim, dim, lorder, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return _combine(_apply_both(self.fsmn_re_L1, x), _apply_both(self.fsmn_im_L1, x))


class ComplexUniDeepFsmn(nn.Module):
    """Two complex FSMN layers whose memory runs along time: the bottleneck of each UNet.

    Input/output ``[2, B, C, 1, T]`` (the bottleneck has one frequency bin; its ``C`` channels are
    the feature axis). With more than one bin, each bin would be filtered on its own.
    """

    def __init__(self, dim: int = 128, hidden: int = 128, lorder: int = 20):
        super().__init__()
        self.fsmn_re_L1 = UniDeepFsmn(dim, dim, lorder, hidden)
        self.fsmn_im_L1 = UniDeepFsmn(dim, dim, lorder, hidden)
        self.fsmn_re_L2 = UniDeepFsmn(dim, dim, lorder, hidden)
        self.fsmn_im_L2 = UniDeepFsmn(dim, dim, lorder, hidden)

    def forward(self, x: Tensor) -> Tensor:
        y = x.transpose(3, 4)  # [2, B, C, T, 1]: memory along T
        y = _combine(_apply_both(self.fsmn_re_L1, y), _apply_both(self.fsmn_im_L1, y))
        y = _combine(_apply_both(self.fsmn_re_L2, y), _apply_both(self.fsmn_im_L2, y))
        return y.transpose(3, 4)


class ComplexSELayer(nn.Module):
    """Complex squeeze-and-excitation gate (``fc_r``, ``fc_i``: Linear-ReLU-Linear-Sigmoid).

    Pools each part over frequency AND time (so the gate sees the whole segment), computes
    ``g_re = fc_r(mean_re) - fc_i(mean_im)``, ``g_im = fc_r(mean_im) + fc_i(mean_re)`` and scales
    the real part by ``g_re``, the imaginary part by ``g_im`` (elementwise, not a complex product).
    """

    def __init__(self, channel: int, reduction: int = 8):
        super().__init__()
        self.fc_r = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.ReLU(),
            nn.Linear(channel // reduction, channel),
            nn.Sigmoid(),
        )
        self.fc_i = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.ReLU(),
            nn.Linear(channel // reduction, channel),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.mean(dim=(3, 4))  # [2, B, C]
        gate = _combine(self.fc_r(pooled), self.fc_i(pooled))
        return x * gate[..., None, None]


# --------------------------------------------------------------------------------------------
# inference blocks: a complex activation is a pair (re, im) of [B, C, T, F] channels-last tensors
# --------------------------------------------------------------------------------------------
#
# Time is the height axis and frequency the width axis here (the training blocks have them the
# other way round); a reference kernel (kF, kT) becomes (kT, kF). With channels-last memory every
# (frame, bin) position is one contiguous row of C channels, so the FSMN's linear layers are plain
# row-major matmuls, and oneDNN runs the convolutions and the depthwise FSMN memory in its native
# layout.

CHANNELS_LAST = torch.channels_last


def _bn_scale_shift(bn: nn.BatchNorm2d | None, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Eval-mode batch-norm as ``y = x * scale + shift`` (float64); identity when ``bn`` is None."""
    if bn is None:
        return (
            torch.ones(n, dtype=torch.float64, device=device),
            torch.zeros(n, dtype=torch.float64, device=device),
        )
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return scale, bn.bias.double() - bn.running_mean.double() * scale


def _param(t: Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().float().contiguous(), requires_grad=False)


class FusedComplexConv(nn.Module):
    """A complex (transposed) conv, an optional eval-mode complex BN and LeakyReLU, fused.

    Uses the 3-multiplication (Gauss) form of the complex product, with the BN scale folded in::

        k1 = W_re * (x_re + x_im)
        re = s_re * k1 + [-s_re (W_re + W_im)] * x_im + (t_re + s_re (b_re - b_im))
        im = s_im * k1 + [ s_im (W_im - W_re)] * x_re + (t_im + s_im (b_re + b_im))

    which is ``BN(conv_re(x_re) - conv_im(x_im))`` / ``BN(conv_re(x_im) + conv_im(x_re))`` with three
    real convolutions instead of four. Inputs/outputs: pairs of ``[B, C, T, F]`` tensors.
    """

    def __init__(
        self,
        w_re: Tensor,
        w_im: Tensor,
        b_re: Tensor,
        b_im: Tensor,
        bn: ComplexBatchNorm2d | None,
        *,
        transposed: bool,
        stride: tuple[int, int],
        padding: tuple[int, int],
        padding_mode: str = "zeros",
        slope: float | None = None,
    ):
        super().__init__()
        out_dim = 1 if transposed else 0
        n_out = w_re.shape[out_dim]
        s_re, t_re = _bn_scale_shift(None if bn is None else bn.bn_re, n_out, w_re.device)
        s_im, t_im = _bn_scale_shift(None if bn is None else bn.bn_im, n_out, w_re.device)
        shape = [1, 1, 1, 1]
        shape[out_dim] = -1
        w_re, w_im = w_re.double(), w_im.double()
        b_re, b_im = b_re.double(), b_im.double()
        # reference kernels are (freq, time); ours are (time, freq)
        self.w_sum = _param(w_re.transpose(2, 3))
        self.w_im_part = _param((-(w_re + w_im) * s_re.view(shape)).transpose(2, 3))
        self.w_re_part = _param(((w_im - w_re) * s_im.view(shape)).transpose(2, 3))
        self.b_im_part = _param(t_re + s_re * (b_re - b_im))
        self.b_re_part = _param(t_im + s_im * (b_re + b_im))
        self.s_re = _param(s_re.view(1, -1, 1, 1))
        self.s_im = _param(s_im.view(1, -1, 1, 1))
        self.transposed = transposed
        self.stride = (stride[1], stride[0])
        self.padding = (padding[1], padding[0])
        self.padding_mode = padding_mode
        self.slope = slope

    @classmethod
    def from_conv(cls, conv: ComplexConv2d, bn: ComplexBatchNorm2d | None = None, slope: float | None = None):
        c_re, c_im = conv.conv_re, conv.conv_im
        return cls(
            c_re.weight, c_im.weight, c_re.bias, c_im.bias, bn, transposed=False, stride=c_re.stride,
            padding=c_re.padding, padding_mode=c_re.padding_mode, slope=slope,
        )  # fmt: skip

    @classmethod
    def from_tconv(cls, tconv: ComplexConvTranspose2d, bn: ComplexBatchNorm2d | None = None, slope=None):
        t_re, t_im = tconv.tconv_re, tconv.tconv_im
        return cls(
            t_re.weight, t_im.weight, t_re.bias, t_im.bias, bn, transposed=True, stride=t_re.stride,
            padding=t_re.padding, slope=slope,
        )  # fmt: skip

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, w, b, self.stride, self.padding)
        if self.padding_mode != "zeros":
            ph, pw = self.padding
            return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode), w, b, self.stride)
        return F.conv2d(x, w, b, self.stride, self.padding)

    def forward(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        k1 = self._conv(xr + xi, self.w_sum, None)
        re = torch.addcmul(self._conv(xi, self.w_im_part, self.b_im_part), k1, self.s_re)
        im = torch.addcmul(self._conv(xr, self.w_re_part, self.b_re_part), k1, self.s_im)
        if self.slope is not None:
            re = F.leaky_relu_(re, self.slope)
            im = F.leaky_relu_(im, self.slope)
        return re, im


class FusedComplexConvNarrowIn(nn.Module):
    """A complex conv with ONE input channel (+ eval BN + LeakyReLU), fused: the first encoder.

    oneDNN is memory-bound and slow on single-channel inputs; here the ``kT * kF`` taps of both
    parts are gathered by strided slicing into ``[B, T', F', 2 * kT * kF]`` and multiplied with
    the (BN-folded) taps, one matmul per output part. Same maths as
    ``BN(conv_re(x_re) - conv_im(x_im))`` / ``BN(conv_re(x_im) + conv_im(x_re))``.
    """

    def __init__(self, conv: ComplexConv2d, bn: ComplexBatchNorm2d | None = None, slope=None):
        super().__init__()
        c_re, c_im = conv.conv_re, conv.conv_im
        if c_re.in_channels != 1:
            raise ValueError("FusedComplexConvNarrowIn is for single-channel inputs")
        w_re = c_re.weight.detach().double().transpose(2, 3)[:, 0]  # [O, kT, kF]
        w_im = c_im.weight.detach().double().transpose(2, 3)[:, 0]
        o, kt, kf = w_re.shape
        s_re, t_re = _bn_scale_shift(None if bn is None else bn.bn_re, o, w_re.device)
        s_im, t_im = _bn_scale_shift(None if bn is None else bn.bn_im, o, w_re.device)
        # rows: taps of x_re (kt, kf), then taps of x_im; columns: output channels
        self.w_out_re = _param((torch.cat((w_re, -w_im), dim=1).reshape(o, -1) * s_re[:, None]).t())
        self.w_out_im = _param((torch.cat((w_im, w_re), dim=1).reshape(o, -1) * s_im[:, None]).t())
        b_re, b_im = c_re.bias.detach().double(), c_im.bias.detach().double()
        self.b_out_re = _param(t_re + s_re * (b_re - b_im))
        self.b_out_im = _param(t_im + s_im * (b_re + b_im))
        self.kernel = (kt, kf)
        self.stride = (c_re.stride[1], c_re.stride[0])
        self.padding = (c_re.padding[1], c_re.padding[0])
        self.padding_mode = c_re.padding_mode
        self.slope = slope

    def _taps(self, x: Tensor) -> list[Tensor]:
        """``x`` ``[B, 1, T, F]`` -> ``kT * kF`` tensors ``[B, T', F']``, one per kernel tap.

        Slice ``k : L - (K - 1 - k) : s`` holds exactly the ``(L - K) // s + 1`` positions of tap
        ``k``; its end is a constant offset from the end, so traced graphs keep dynamic sizes.
        """
        ph, pw = self.padding
        mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph), mode=mode)
        x = x[:, 0]
        kt, kf = self.kernel
        st, sf = self.stride
        return [
            x[:, i : (i - kt + 1) or None : st, j : (j - kf + 1) or None : sf]
            for i in range(kt) for j in range(kf)
        ]  # fmt: skip

    def forward(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        cols = torch.stack(self._taps(xr) + self._taps(xi), dim=-1)  # [B, T', F', 2 kT kF]
        b, t, f, k = cols.shape
        rows = cols.view(b * t * f, k)
        out = []
        for w, bias in ((self.w_out_re, self.b_out_re), (self.w_out_im, self.b_out_im)):
            y = torch.addmm(bias, rows, w).view(b, t, f, -1).permute(0, 3, 1, 2)  # channels-last
            out.append(F.leaky_relu_(y, self.slope) if self.slope is not None else y)
        return out[0], out[1]


class FusedComplexConvTransposeNarrow(nn.Module):
    """A complex transposed conv with very few output channels (+ eval BN + LeakyReLU), fused.

    oneDNN's transposed convolution is slow when it produces a single channel (the last decoder
    maps 256 complex channels to 1). Here each input position is first multiplied by all kernel
    taps at once (two matmuls, ``[rows, C] @ [C, 2 * O * kT * kF]``), then a cheap transposed
    convolution with a one-hot kernel overlap-adds the taps into place. Same maths as
    ``BN(tconv_re(x_re) - tconv_im(x_im))`` / ``BN(tconv_re(x_im) + tconv_im(x_re))``.
    """

    def __init__(self, tconv: ComplexConvTranspose2d, bn: ComplexBatchNorm2d | None = None, slope=None):
        super().__init__()
        t_re, t_im = tconv.tconv_re, tconv.tconv_im
        w_re = t_re.weight.detach().double().transpose(2, 3)  # [C, O, kT, kF]
        w_im = t_im.weight.detach().double().transpose(2, 3)
        c, o, kt, kf = w_re.shape
        s_re, t_re_shift = _bn_scale_shift(None if bn is None else bn.bn_re, o, w_re.device)
        s_im, t_im_shift = _bn_scale_shift(None if bn is None else bn.bn_im, o, w_re.device)
        s_re4, s_im4 = s_re.view(1, -1, 1, 1), s_im.view(1, -1, 1, 1)
        # output channels (part, o); taps flattened as (part, o, kt, kf)
        self.w_from_re = _param(torch.cat((w_re * s_re4, w_im * s_im4), dim=1).reshape(c, -1))
        self.w_from_im = _param(torch.cat((-w_im * s_re4, w_re * s_im4), dim=1).reshape(c, -1))
        b_re, b_im = t_re.bias.detach().double(), t_im.bias.detach().double()
        self.bias = _param(torch.cat((t_re_shift + s_re * (b_re - b_im), t_im_shift + s_im * (b_re + b_im))))
        n = 2 * o * kt * kf
        onehot = torch.zeros(n, 2 * o, kt, kf, device=w_re.device)
        idx = torch.arange(n, device=w_re.device)
        onehot[idx, idx // (kt * kf), (idx // kf) % kt, idx % kf] = 1.0
        self.onehot = _param(onehot)
        self.out_channels = o
        self.stride = (t_re.stride[1], t_re.stride[0])
        self.padding = (t_re.padding[1], t_re.padding[0])
        self.slope = slope

    def forward(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        b, c, t, f = xr.shape
        rows_r = xr.permute(0, 2, 3, 1).reshape(-1, c)
        rows_i = xi.permute(0, 2, 3, 1).reshape(-1, c)
        cols = torch.addmm(torch.mm(rows_i, self.w_from_im), rows_r, self.w_from_re)  # [rows, taps]
        cols = cols.view(b, t, f, -1).permute(0, 3, 1, 2)
        y = F.conv_transpose2d(cols, self.onehot, self.bias, self.stride, self.padding)
        if self.slope is not None:
            y = F.leaky_relu_(y, self.slope)
        o = self.out_channels
        return y[:, :o], y[:, o:]


class FusedComplexFsmn(nn.Module):
    """One or more complex FSMN layers on pairs of ``[B, C, T, F]`` channels-last tensors.

    The memory runs along frequency (``along_time=False``, the encoders'/decoders' FSMNs) or along
    time (``along_time=True``, the bottleneck, where ``F == 1``). Per layer, with ``A``/``B`` the real
    FSMN maps of ``fsmn_re``/``fsmn_im`` without their residual, ``A(x) = (1 + m_re) P_re relu(L_re x + b)``::

        re = x_re - x_im + A(x_re) - B(x_im)        im = x_re + x_im + A(x_im) + B(x_re)

    Both parts go through ``[L_re; L_im]`` as one matmul, each branch's projection is one matmul
    over both parts, and ``1 + m`` is one depthwise convolution per branch whose last tap carries
    the identity.
    """

    def __init__(self, layers: list[tuple[UniDeepFsmn, UniDeepFsmn]], along_time: bool = False):
        super().__init__()
        self.along_time = along_time
        self.n_layers = len(layers)
        f_re0 = layers[0][0]
        self.lorder = f_re0.lorder
        self.channels = f_re0.project.weight.shape[0]
        self.hidden = f_re0.linear.weight.shape[0]
        lin_t, lin_b, proj_a, proj_b, taps_a, taps_b = [], [], [], [], [], []
        for f_re, f_im in layers:
            lin_t.append(torch.cat((f_re.linear.weight, f_im.linear.weight)).t())  # [C, 2H]
            lin_b.append(torch.cat((f_re.linear.bias, f_im.linear.bias)))  # [2H]
            proj_a.append(f_re.project.weight.t())  # [H, C]
            proj_b.append(f_im.project.weight.t())
            for f, taps in ((f_re, taps_a), (f_im, taps_b)):
                w = f.conv1.weight.detach().double().clone()  # [C, 1, L, 1]
                w[:, :, -1] += 1.0  # the identity path: p + m(p)
                taps.append(w if along_time else w.transpose(2, 3))  # memory along H or W
        self.lin_t = _param(torch.stack(lin_t))
        self.lin_b = _param(torch.stack(lin_b))
        self.proj_a = _param(torch.stack(proj_a))
        self.proj_b = _param(torch.stack(proj_b))
        self.taps_a = _param(torch.stack(taps_a))
        self.taps_b = _param(torch.stack(taps_b))
        self.mem_padding = (self.lorder - 1, 0) if along_time else (0, self.lorder - 1)
        self.chunk_rows = 4096  # (frame, bin) positions per slice in eager mode; see forward

    @classmethod
    def from_l1(cls, m: ComplexUniDeepFsmnL1) -> FusedComplexFsmn:
        return cls([(m.fsmn_re_L1, m.fsmn_im_L1)])

    @classmethod
    def from_two_layer(cls, m: ComplexUniDeepFsmn) -> FusedComplexFsmn:
        return cls([(m.fsmn_re_L1, m.fsmn_im_L1), (m.fsmn_re_L2, m.fsmn_im_L2)], along_time=True)

    def _memory(self, q: Tensor, taps: Tensor, t: int, f: int) -> Tensor:
        """Causal depthwise filter (identity included) of rows ``q`` ``[2B*T*F, C]`` -> ``[2B, C, T, F]``."""
        c = self.channels
        q = q.view(-1, t, f, c).permute(0, 3, 1, 2)  # channels-last view [2B, C, T, F]
        y = F.conv2d(q, taps, None, 1, self.mem_padding, 1, c)
        return y[:, :, :t] if self.along_time else y[..., :f]

    def _layer(self, i: int, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        b, c, t, f = xr.shape
        h = self.hidden
        rows = torch.cat((xr, xi)).permute(0, 2, 3, 1).reshape(-1, c)  # [(part, B, T, F), C]
        hid = torch.addmm(self.lin_b[i], rows, self.lin_t[i]).relu_()  # [rows, 2H]: (A | B) branch
        ma = self._memory(torch.mm(hid[:, :h], self.proj_a[i]), self.taps_a[i], t, f)
        mb = self._memory(torch.mm(hid[:, h:], self.proj_b[i]), self.taps_b[i], t, f)
        re = (xr - xi).add_(ma[:b]).sub_(mb[b:])
        im = (xr + xi).add_(ma[b:]).add_(mb[:b])
        return re, im

    def _all_layers(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        for i in range(self.n_layers):
            xr, xi = self._layer(i, xr, xi)
        return xr, xi

    def forward(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        if self.along_time or torch.jit.is_tracing() or torch.jit.is_scripting():
            return self._all_layers(xr, xi)
        b, _, t, f = xr.shape
        chunk = max(1, self.chunk_rows // (b * f))
        if chunk >= t:
            return self._all_layers(xr, xi)
        # Frames are independent here (the memory runs along frequency): work through the time
        # axis in slices that keep the hidden activations cache-resident. Exact, and not traced.
        out_r, out_i = torch.empty_like(xr), torch.empty_like(xi)
        for t0 in range(0, t, chunk):
            sl = slice(t0, min(t, t0 + chunk))
            re, im = self._all_layers(xr[:, :, sl], xi[:, :, sl])
            out_r[:, :, sl] = re
            out_i[:, :, sl] = im
        return out_r, out_i


class FusedComplexSE(nn.Module):
    """The complex SE gate (same maths as :class:`ComplexSELayer`) on a pair of ``[B, C, T, F]``."""

    def __init__(self, se: ComplexSELayer):
        super().__init__()
        self.fc_r = copy.deepcopy(se.fc_r)
        self.fc_i = copy.deepcopy(se.fc_i)

    def forward(self, xr: Tensor, xi: Tensor) -> tuple[Tensor, Tensor]:
        pooled = torch.stack((xr.mean(dim=(2, 3)), xi.mean(dim=(2, 3))))  # [2, B, C]
        gate = _combine(self.fc_r(pooled), self.fc_i(pooled))
        return xr * gate[0][:, :, None, None], xi * gate[1][:, :, None, None]
