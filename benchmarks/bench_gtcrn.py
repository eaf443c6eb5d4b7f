"""Real-time factor of the offline GTCRN (torch, CPU) on 10 s of 16 kHz audio.

RTF = processing time / audio duration, for the whole ``GTCRN.forward`` (STFT + network + iSTFT).
The CPU is shared, so each configuration is repeated and the minimum is the figure to quote
(the median shows how noisy the machine was). The process CPU time per run is printed too: on a
busy box it stays close to the quiet-machine wall time while the wall clock does not (with several
threads it adds up the threads' time, including OpenMP spin-waiting).

    python benchmarks/bench_gtcrn.py                 # 1 and 2 threads, random weights
    python benchmarks/bench_gtcrn.py --weights ../shared/weights/gtcrn_dns3_stream.tar --repeats 20
    python benchmarks/bench_gtcrn.py --stateful --onnx ../shared/weights/gtcrn_simple_stream.onnx

``--stateful`` measures the stateful stream (``TorchBackend.open_stream``) on one thread instead: CPU time per
second of audio fed in chunks of 1 s and more, as a ratio to the offline forward on the same audio, and the
cost of one 16 ms hop (256 samples in, 256 out: median, p99) beside the official streaming ONNX graph driven
frame by frame (``--onnx``), all in one run.

Weights do not change the cost of the network; they are accepted to benchmark exactly what ships.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from denoise_models.gtcrn import GTCRN

TARGET_RTF = 0.02  # single-threaded budget


def make_input(seconds: float, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """Deterministic speech-like test signal ``[batch, seconds * 16000]``: a gliding tone in noise."""
    gen = torch.Generator().manual_seed(seed)
    n = round(seconds * GTCRN.sample_rate)
    t = torch.arange(n) / GTCRN.sample_rate
    tone = 0.3 * torch.sin(2 * torch.pi * (200 + 100 * torch.sin(2 * torch.pi * 0.5 * t)) * t)
    noise = 0.05 * torch.randn(batch, n, generator=gen)
    return (tone + noise).float()


def time_forward(
    net: GTCRN, wav: torch.Tensor, repeats: int, warmup: int = 2
) -> tuple[list[float], list[float]]:
    """(wall-clock s, process CPU s) of ``net(wav)`` for ``repeats`` runs after ``warmup`` untimed runs."""
    wall, cpu = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            net(wav)
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            net(wav)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _hop_costs(processes: dict, audio: np.ndarray, hop: int) -> dict[str, tuple[list[float], list[float]]]:
    """(CPU ms, wall ms) of each ``process(block)`` for each ``hop``-sample block of ``audio``; the processes
    take turns on each block (interleaved), so load on a shared machine falls on all of them alike."""
    costs = {name: ([], []) for name in processes}
    for start in range(0, audio.size - hop + 1, hop):
        block = audio[start : start + hop]
        for name, process in processes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            process(block)
            costs[name][1].append((time.perf_counter() - t0) * 1e3)
            costs[name][0].append((time.process_time() - c0) * 1e3)
    return costs


def stateful_report(weights: Path | None, onnx: Path | None, seconds: float, repeats: int) -> None:
    """Print the "Stateful GTCRN" tables of docs/benchmarks.md (one thread, one run): torch and the
    project's exported stateful graph on ONNX Runtime, against the torch offline forward."""
    from denoise.backends.onnx_backend import OnnxBackend
    from denoise.backends.torch_backend import TorchBackend
    from denoise.export import ExportConfig, export_onnx

    torch.set_num_threads(1)
    backends = {"torch": TorchBackend("gtcrn", weights, device="cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        graph = export_onnx(
            ExportConfig("gtcrn", str(weights) if weights else None, Path(tmp) / "g.onnx")
        ).path
        backends["ORT (exported stateful graph)"] = OnnxBackend(
            "gtcrn", onnx_path=graph, device="cpu", threads=1
        )
    audio = make_input(seconds).numpy()
    hop, rate = backends["torch"].hop_length, backends["torch"].sample_rate  # 256 samples at 16 kHz

    def streamed(backend, chunk: int) -> None:
        stream = backend.open_stream(1)
        for start in range(0, audio.shape[1], chunk):
            stream.process(audio[:, start : start + chunk])
        stream.flush()

    def cpu_per_audio_second(fn) -> float:
        fn()  # warm-up
        runs = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            runs.append(time.process_time() - start)
        return min(runs) / seconds * 1e3

    print(
        f"GTCRN stateful stream, torch {torch.__version__}, 1 thread, {seconds:g} s of audio, min of {repeats}"
    )
    base = cpu_per_audio_second(lambda: backends["torch"].process(audio))
    print("| backend | feed | CPU ms per s of audio | vs torch offline forward |\n|---|---|---|---|")
    for name, backend in backends.items():
        cost = base if name == "torch" else cpu_per_audio_second(lambda b=backend: b.process(audio))
        print(f"| {name} | offline `process` (whole signal) | {cost:.1f} | {cost / base:.2f} |")
        for chunk_s in (0.016, 0.064, 1.0, 4.0, 10.0):
            chunk = round(chunk_s * backend.sample_rate)
            cost = cpu_per_audio_second(lambda b=backend, c=chunk: streamed(b, c))
            print(
                f"| {name} | `open_stream`, {chunk_s * 1000:g} ms blocks | {cost:.1f} | {cost / base:.2f} |"
            )

    print(
        "\n| per 16 ms hop (256 samples), 1 thread, interleaved | CPU median ms | CPU p99 ms | wall median ms | "
        "wall p99 ms | CPU ms per s of audio |"
    )
    print("|---|---|---|---|---|---|")
    processes = {}
    for name, backend in backends.items():
        stream = backend.open_stream(1)
        processes[f"{name} `open_stream(1).process`"] = lambda b, s=stream: s.process(b[None])
    if onnx is not None:
        from denoise.backends.gtcrn_stream import GtcrnStreamBackend

        streamer = GtcrnStreamBackend(onnx_path=onnx, threads=1).streamer()
        processes["official streaming ONNX graph, frame by frame"] = streamer.push
    for name, (cpu, wall) in _hop_costs(processes, audio[0], hop).items():
        cpu_ms, wall_ms = np.asarray(cpu[10:]), np.asarray(wall[10:])  # the first calls warm up
        print(
            f"| {name} | {np.median(cpu_ms):.2f} | {np.percentile(cpu_ms, 99):.2f} | "
            f"{np.median(wall_ms):.2f} | {np.percentile(wall_ms, 99):.2f} | {cpu_ms.mean() * rate / hop:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length (s), default 10")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per thread count")
    parser.add_argument("--weights", type=Path, help="optional official checkpoint ({'model': state_dict})")
    parser.add_argument("--stateful", action="store_true", help="benchmark the stateful stream instead")
    parser.add_argument("--onnx", type=Path, help="with --stateful: the official streaming graph to compare")
    args = parser.parse_args(argv)
    if args.stateful:
        stateful_report(args.weights, args.onnx, args.seconds, min(args.repeats, 3))
        return 0

    net = GTCRN().eval()
    if args.weights is not None:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        state, _notes = GTCRN.remap_state_dict(state.get("model", state))
        net.load_state_dict(state, strict=True)
    wav = make_input(args.seconds)

    print(f"GTCRN offline, {args.seconds:g} s of audio, torch {torch.__version__}, {args.repeats} runs each")
    print(
        f"{'threads':>7}  {'min s':>7}  {'median s':>8}  {'min CPU s':>9}  {'RTF min':>8}  {'RTF median':>10}"
    )
    rtf_by_threads = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        wall, cpu = time_forward(net, wav, args.repeats)
        best, median = min(wall), statistics.median(wall)
        rtf_by_threads[threads] = best / args.seconds
        print(
            f"{threads:>7}  {best:7.3f}  {median:8.3f}  {min(cpu):9.3f}  "
            f"{best / args.seconds:8.4f}  {median / args.seconds:10.4f}"
        )
    if 1 in rtf_by_threads:
        verdict = "meets" if rtf_by_threads[1] <= TARGET_RTF else "MISSES"
        print(f"single-thread RTF {rtf_by_threads[1]:.4f} {verdict} the target of {TARGET_RTF}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
