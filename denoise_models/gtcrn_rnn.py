"""GTCRN's recurrent layers: grouped GRUs and the dual-path GRU block, plus their streaming form.

Offline they run ``nn.GRU`` exactly as the official code does. Streaming (a state is passed in) they may step
several small GRUs together with :func:`stacked_gru`, which is the same computation with fewer kernel calls.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Up to this many steps, :func:`stacked_gru`'s Python loop beats ``nn.GRU`` on one small GRU (whose fixed
#: per-call cost dominates on a frame or two); over longer sequences nn.GRU's native loop wins.
STACKED_MAX_STEPS = 8


def _gru_recurrence(gates_in: Tensor, w_hh: Tensor, b_hh: Tensor, h: Tensor) -> Tensor:
    """R independent GRU recurrences stepped side by side (nn.GRU's equations, gate order r, z, n).

    ``gates_in`` ``[L, R, N, 3H]`` (``x W_ih^T + b_ih``, in step order), ``w_hh`` ``[R, H, 3H]`` (``W_hh^T``),
    ``b_hh`` ``[R, 1, 3H]``, ``h`` ``[R, N, H]`` -> every step's state ``[R, N, L, H]``.
    """
    hidden = w_hh.shape[1]
    # Split once, outside the loop: every kernel call per step counts when a step is this small.
    sizes = [2 * hidden, hidden]
    (gi_rz, gi_n), (w_rz, w_n), (b_rz, b_n) = (t.split(sizes, dim=-1) for t in (gates_in, w_hh, b_hh))
    outs: list[Tensor] = []
    for g_rz, g_n in zip(gi_rz.unbind(0), gi_n.unbind(0), strict=True):
        r, z = torch.baddbmm(b_rz, h, w_rz).add_(g_rz).sigmoid_().split(hidden, dim=-1)
        n = torch.addcmul(g_n, r, torch.baddbmm(b_n, h, w_n)).tanh_()
        h = torch.addcmul(n, z, h - n)
        outs.append(h)
    return torch.stack(outs, dim=2)


def stacked_gru(runs: list[tuple[Tensor, nn.GRU, str]], h0: Tensor | None) -> tuple[Tensor, Tensor]:
    """Run several single-layer GRU directions at once: the streaming form of small GRUs.

    ``nn.GRU`` steps each direction with a dozen kernel calls per step, which dominates when a call holds
    one frame; this steps all of them together, one batched matmul per step (same equations, float
    rounding aside). ``runs``: (input ``[N, L, I]`` in the direction's step order, the GRU, its parameter suffix
    ``""`` or ``"_reverse"``); ``h0`` ``[R, N, H]`` or None (zeros).

    Returns:
        (outputs ``[R, N, L, H]`` in step order, final states ``[R, N, H]``).
    """
    gates = [
        F.linear(x, getattr(gru, f"weight_ih_l0{sfx}"), getattr(gru, f"bias_ih_l0{sfx}"))
        for x, gru, sfx in runs
    ]
    w_hh = torch.stack([getattr(gru, f"weight_hh_l0{sfx}").T for _, gru, sfx in runs])
    b_hh = torch.stack([getattr(gru, f"bias_hh_l0{sfx}") for _, gru, sfx in runs])[:, None]
    if h0 is None:
        h0 = gates[0].new_zeros(len(runs), gates[0].shape[0], w_hh.shape[1])
    out = _gru_recurrence(torch.stack(gates).permute(2, 0, 1, 3), w_hh, b_hh, h0)
    return out, out[:, :, -1]


class GRNN(nn.Module):
    """Grouped GRU: the feature vector is split in two halves, each with its own (smaller) GRU.

    ``hidden_size`` is the total over both directions' halves as in the official code: each group
    GRU has ``hidden_size // 2`` units per direction.
    """

    def __init__(self, input_size: int, hidden_size: int, bidirectional: bool = False) -> None:
        super().__init__()
        size_in, size_hidden = input_size // 2, hidden_size // 2
        self.bidirectional = bidirectional
        self.rnn1 = nn.GRU(size_in, size_hidden, 1, batch_first=True, bidirectional=bidirectional)
        self.rnn2 = nn.GRU(size_in, size_hidden, 1, batch_first=True, bidirectional=bidirectional)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None, *, stacked: bool = False
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x``: ``[N, L, input_size]`` -> (``[N, L, hidden_size * (2 if bidirectional else 1)]``, state).

        ``state``: the two group GRUs' hidden states; None = zeros (the official code passes explicit
        zeros, which is the same). ``stacked``: compute with :func:`stacked_gru` (streaming) instead of
        ``nn.GRU`` (the offline path, kept bit-identical to the official code).
        """
        x1, x2 = torch.chunk(x, 2, dim=-1)
        if not stacked:
            y1, h1 = self.rnn1(x1, None if state is None else state[0])
            y2, h2 = self.rnn2(x2, None if state is None else state[1])
            return torch.cat([y1, y2], dim=-1), (h1, h2)
        if self.bidirectional:  # the intra path: always from zeros, both directions of both groups at once
            runs = [(x1, self.rnn1, ""), (x1.flip(1), self.rnn1, "_reverse")]
            runs += [(x2, self.rnn2, ""), (x2.flip(1), self.rnn2, "_reverse")]
            out, h = stacked_gru(runs, None)
            y = torch.cat([out[0], out[1].flip(1), out[2], out[3].flip(1)], dim=-1)
            return y, (h[0:2], h[2:4])
        out, h = stacked_gru(
            [(x1, self.rnn1, ""), (x2, self.rnn2, "")], None if state is None else torch.cat(state)
        )
        return torch.cat([out[0], out[1]], dim=-1), (h[0:1], h[1:2])


class DPGRNN(nn.Module):
    """Grouped dual-path RNN with residual connections.

    Intra path: bidirectional grouped GRU across the ``width`` frequency bands of each frame.
    Inter path: causal grouped GRU across frames for each band. Each path: GRU -> linear ->
    LayerNorm over (band, channel) -> residual add.
    """

    def __init__(self, input_size: int, width: int, hidden_size: int) -> None:
        super().__init__()
        self.width = width
        self.hidden_size = hidden_size
        self.intra_rnn = GRNN(input_size, hidden_size // 2, bidirectional=True)
        self.intra_fc = nn.Linear(hidden_size, hidden_size)
        self.intra_ln = nn.LayerNorm((width, hidden_size), eps=1e-8)
        self.inter_rnn = GRNN(input_size, hidden_size, bidirectional=False)
        self.inter_fc = nn.Linear(hidden_size, hidden_size)
        self.inter_ln = nn.LayerNorm((width, hidden_size), eps=1e-8)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``x``: ``[B, C, T, width]`` with C == hidden_size -> (same shape, inter GRU state).

        Only the inter (time) path carries state from call to call: ``[1, B * width, hidden / 2]``
        per group; the intra path runs across the bands of one frame and starts from zeros each frame.
        """
        batch = x.shape[0]
        x = x.permute(0, 2, 3, 1)  # [B, T, F, C]

        # Streaming (state given): the intra path's four small GRUs are faster stacked at any batch; the
        # inter path's two only over a few steps. Offline: nn.GRU throughout, bit-identical to the official code.
        # An exported graph (tracing) keeps nn.GRU: ONNX has one GRU op, a stepped loop would be unrolled.
        streaming = state is not None and not torch.jit.is_tracing()
        intra, _ = self.intra_rnn(
            x.reshape(-1, self.width, self.hidden_size), stacked=streaming
        )  # [B*T, F, C]
        intra = self.intra_fc(intra).reshape(batch, -1, self.width, self.hidden_size)
        x = x + self.intra_ln(intra)

        seq = x.transpose(1, 2).reshape(batch * self.width, -1, self.hidden_size)  # [B*F, T, C]
        inter, state = self.inter_rnn(seq, state, stacked=streaming and seq.shape[1] <= STACKED_MAX_STEPS)
        inter = self.inter_fc(inter).reshape(batch, self.width, -1, self.hidden_size)
        x = x + self.inter_ln(inter.transpose(1, 2))  # LayerNorm over (F, C) of each frame
        return x.permute(0, 3, 1, 2), state  # [B, C, T, F]
