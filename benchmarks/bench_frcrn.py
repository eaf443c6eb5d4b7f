"""Time FRCRN on CPU: plain (training) module vs the fused inference copy, 1 and 2 threads.

    python benchmarks/bench_frcrn.py                      # 10 s of audio, 1 and 2 threads, 5 repeats
    python benchmarks/bench_frcrn.py --seconds 3 --repeats 3 --threads 1
    /tmp/venv-with-modelscope/bin/python benchmarks/bench_frcrn.py --reference

Random weights (timing does not depend on them). Each variant runs once to warm up, then
``--repeats`` times; the variants are interleaved round by round so that load from other
processes on a shared machine hits all of them alike. Reported per variant: the minimum wall time
and the minimum process CPU time, both as seconds per second of audio (RTF). With one thread the
CPU time is the steadiest figure on a busy machine; with two threads use wall time (CPU time then
also counts the threads' spin-waiting).

``--reference`` also times ModelScope's own FRCRN (``modelscope.models.audio.ans.frcrn.FRCRN``)
when that package is importable - install it in a separate virtualenv, never the project's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from denoise_models.frcrn import FRCRN, optimize_for_inference

RELEASED = dict(
    complex=True, model_complexity=45, model_depth=14, log_amp=False, padding_mode="zeros",
    win_len=640, win_inc=320, fft_len=640, win_type="hann",
)  # fmt: skip


def build_variants(reference: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    plain = FRCRN().eval()
    variants: dict[str, torch.nn.Module] = {"plain": plain, "optimized": optimize_for_inference(plain)}
    if reference:
        try:
            from modelscope.models.audio.ans.frcrn import FRCRN as ReferenceFRCRN
        except ImportError as exc:  # pragma: no cover - depends on the environment
            print(f"reference not timed: {exc}")
        else:
            ref = ReferenceFRCRN(**RELEASED).eval()
            ref.load_state_dict(plain.state_dict(), strict=False)  # same weights; unused modules stay random
            variants["modelscope"] = ref
    return variants


def run(net: torch.nn.Module, wav: torch.Tensor) -> None:
    out = net(wav)
    if isinstance(out, (list, tuple)):  # the reference returns all six outputs
        out = out[4]
    assert out.shape[-1] == wav.shape[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0, help="audio length (default 10)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    ap.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts (default 1 2)"
    )
    ap.add_argument("--reference", action="store_true", help="also time ModelScope's FRCRN if importable")
    ap.add_argument("--only", nargs="+", help="time only these variants (plain, optimized, modelscope)")
    args = ap.parse_args()

    samples = round(args.seconds * 16000 / 320) * 320
    wav = torch.randn(1, samples) * 0.1
    variants = build_variants(args.reference)
    if args.only:
        variants = {k: v for k, v in variants.items() if k in args.only}
    seconds = samples / 16000
    print(f"torch {torch.__version__}, {seconds:.1f} s of audio, {args.repeats} repeats, min reported")
    for threads in args.threads:
        torch.set_num_threads(threads)
        wall = {k: float("inf") for k in variants}
        cpu = {k: float("inf") for k in variants}
        with torch.inference_mode():
            for net in variants.values():
                run(net, wav[:, : 2 * 16000])  # warm-up (allocator, oneDNN primitive cache)
            for _ in range(args.repeats):
                for name, net in variants.items():
                    w0, c0 = time.perf_counter(), time.process_time()
                    run(net, wav)
                    wall[name] = min(wall[name], time.perf_counter() - w0)
                    cpu[name] = min(cpu[name], time.process_time() - c0)
        for name in variants:
            line = (
                f"threads={threads}  {name:10s}  wall {wall[name]:7.2f} s  RTF {wall[name] / seconds:6.3f}"
                f"   cpu {cpu[name]:7.2f} s  cpu-RTF {cpu[name] / seconds:6.3f}"
            )
            base = "modelscope" if "modelscope" in variants else "plain"
            if base in variants and name != base:
                line += (
                    f"   x{wall[base] / wall[name]:.2f} vs {base} (wall), x{cpu[base] / cpu[name]:.2f} (cpu)"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
