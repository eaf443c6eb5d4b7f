"""FRCRN's seam error: chunked (default settings) vs one forward over the whole clip, on real speech.

FRCRN has no carried state (its SE blocks pool over the chunk), so the engine cross-fades chunks; this
measures what that costs on a real clip with real-scale weights (the test weights in
``../shared/fixtures/frcrn``). Prints SNR of the chunked output against the whole-clip output, overall and
within +-1 s of each seam.

    DENOISE_WEIGHTS_MIRROR=../shared/weights OMP_NUM_THREADS=1 python benchmarks/frcrn_seam_error.py --seconds 24
"""

from __future__ import annotations

import argparse

import numpy as np

from denoise.audio import read_audio, resample
from denoise.engine import Denoiser
from denoise.tutorial import shared_dir


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=24.0)
    args = p.parse_args()
    shared = shared_dir()
    pieces: list[np.ndarray] = []
    for path in sorted((shared / "eval/vbd/noisy").glob("*.wav")):
        audio = read_audio(path)
        pieces.append(resample(audio.samples[0], audio.sample_rate, 16000))
        if sum(map(len, pieces)) >= args.seconds * 16000:
            break
    clip = np.concatenate(pieces)[: round(args.seconds * 16000)]
    weights = str(shared / "fixtures/frcrn/frcrn_testweights_seed0.pt")
    whole = Denoiser(model="frcrn", weights=weights, chunk_seconds=args.seconds + 1).enhance(clip, 16000)
    chunked_d = Denoiser(model="frcrn", weights=weights)
    chunked = chunked_d.enhance(clip, 16000)
    chunk = chunked_d.config.chunk_seconds or chunked_d.defaults.chunk_seconds
    step = chunk - chunked_d.config.overlap_seconds
    seams = [round(s * 16000) for s in np.arange(step, args.seconds - chunk + step, step)]
    near = np.zeros(clip.size, bool)
    for s in seams:
        near[max(0, s - 16000) : s + 16000] = True
    print(f"FRCRN, {args.seconds:g} s real speech (VoiceBank-DEMAND noisy), chunks {chunk:g} s, fade "
          f"{chunked_d.config.overlap_seconds:g} s, {len(seams)} seam(s)")  # fmt: skip
    print(f"chunked vs whole: {snr_db(whole, chunked):.1f} dB overall, {snr_db(whole[near], chunked[near]):.1f} dB "
          f"within 1 s of a seam")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
