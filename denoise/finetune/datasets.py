"""Training data for fine-tuning: on-the-fly mixing of clean speech with noise, or noisy/clean pairs.

Design
- Files are indexed once (path, length, rate from the header: no audio is loaded), so a DNS-size
  corpus costs a list of paths in memory. Each item reads only the segment it needs from disk.
- Everything an item contains is a pure function of ``(seed, epoch, index)``: the same config gives
  the same mixtures in any number of DataLoader workers or processes, and a run resumed in the middle
  of an epoch sees exactly the batches it would have seen.
- Audio of any rate and channel count is mixed to mono and resampled to 16 kHz (soxr, through
  :func:`denoise.audio.resample`).
- Folders are walked and noisy/clean files paired by :mod:`denoise.pairing`, the rule ``denoise eval``
  uses too.
- A file that cannot be read is skipped with a warning (logged once), at indexing time or when an
  item first touches it; the item then draws another file.
- Validation is held out by clean-speech *file* and by *time* in every noise file (the last
  ``val_fraction`` of each recording), so validation mixtures contain speakers/utterances and noise
  stretches that training never sees, while still being the same noise type.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from denoise.audio import AudioError, resample
from denoise.finetune.config import FinetuneConfig
from denoise.pairing import audio_files, pair_folders
from denoise_models.spec import SPECS

log = logging.getLogger(__name__)

# Hz: the datasets serve every architecture at its one rate (a network at another rate would make this
# a parameter of the datasets).
(SAMPLE_RATE,) = {spec.sample_rate for spec in SPECS.values()}
_RETRIES = 20  # other files an item may draw before giving up (all bad = a configuration problem)


# ------------------------------------------------------------------------------------ file index


@dataclass(frozen=True)
class AudioEntry:
    """One indexed file: enough to read any part of it without opening it again for its header."""

    path: Path
    frames: int  # samples per channel at the file's own rate
    sample_rate: int  # Hz

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    @property
    def samples_16k(self) -> int:
        """Length after resampling to 16 kHz, in samples."""
        return int(self.frames * SAMPLE_RATE // self.sample_rate)


def index_audio(paths: Sequence[Path], *, what: str = "audio", min_seconds: float = 0.05) -> list[AudioEntry]:
    """Read the headers of ``paths``; unreadable or too-short files are skipped with a warning.

    Only headers are read (fast, constant memory per file), which is what lets the datasets scale to
    corpora far larger than RAM.
    """
    entries: list[AudioEntry] = []
    for path in paths:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            log.warning("skipping %s file %s: not readable (%s)", what, path, str(err).split(":")[-1].strip())
            continue
        if info.frames <= 0 or info.samplerate <= 0 or info.frames / info.samplerate < min_seconds:
            log.warning("skipping %s file %s: shorter than %.2f s", what, path, min_seconds)
            continue
        entries.append(AudioEntry(Path(path), int(info.frames), int(info.samplerate)))
    return entries


def read_segment(entry: AudioEntry, start: int, length: int) -> np.ndarray:
    """Read ``length`` samples at 16 kHz starting at 16 kHz sample ``start``; mono float32 ``[length]``.

    Only the needed span (plus a few samples of resampler context) is read from disk. Past the end of
    the file the result is zero-padded.

    Raises:
        AudioError: the file cannot be decoded.
    """
    sr = entry.sample_rate
    out = np.zeros(length, dtype=np.float32)
    # Start reading on a native sample that falls exactly on a 16 kHz sample (a multiple of
    # sr / gcd(sr, 16000)), so the resampled span lines up with ``start`` without a fractional shift;
    # 256 native samples of margin give the resampler's filter its context at both edges.
    step = sr // math.gcd(sr, SAMPLE_RATE)
    margin = 0 if sr == SAMPLE_RATE else 256
    first = max(0, (start * sr // SAMPLE_RATE - margin) // step * step)
    if first >= entry.frames:
        return out
    count = -(-length * sr // SAMPLE_RATE) + 2 * margin + step
    try:
        with sf.SoundFile(str(entry.path)) as fh:
            fh.seek(first)
            data = fh.read(count, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{entry.path}: cannot read ({str(err).split(':')[-1].strip()})") from err
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    if sr != SAMPLE_RATE:
        mono = resample(mono, sr, SAMPLE_RATE)[start - first * SAMPLE_RATE // sr :]
    n = min(length, len(mono))
    out[:n] = mono[:n]
    return out


# -------------------------------------------------------------------------------------- helpers


def _stable_fraction(path: Path) -> float:
    """A number in [0, 1) fixed by the file's name, so the split does not move when files are added."""
    digest = hashlib.sha1(path.name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_files(
    entries: Sequence[AudioEntry], val_fraction: float
) -> tuple[list[AudioEntry], list[AudioEntry]]:
    """Hold out ``val_fraction`` of the files (at least one, and at least one left for training).

    The files with the smallest name-hash go to validation: deterministic, independent of the seed and
    of the folder's order, and stable as a corpus grows.
    """
    if len(entries) < 2:
        raise ValueError(f"need at least 2 files to hold one out for validation, found {len(entries)}")
    ranked = sorted(entries, key=lambda e: (_stable_fraction(e.path), str(e.path)))
    n_val = min(max(1, round(val_fraction * len(entries))), len(entries) - 1)
    val = {id(e) for e in ranked[:n_val]}
    return [e for e in entries if id(e) not in val], [e for e in entries if id(e) in val]


def segment_length(seconds: float, multiple: int = 1) -> int:
    """``seconds`` at 16 kHz rounded up to a multiple of ``multiple`` samples (a network's hop)."""
    n = math.ceil(seconds * SAMPLE_RATE)
    return -(-n // multiple) * multiple


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Linear convolution truncated to ``len(x)`` (numpy FFT; no SciPy dependency)."""
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]
    return y.astype(np.float32)


# -------------------------------------------------------------------------------------- datasets


class _EpochDataset(Dataset):
    """Base: items depend on ``(seed, epoch, index)`` only; bad files are remembered and avoided."""

    def __init__(self, length: int, seed: int, fixed: bool) -> None:
        self.length = int(length)
        self.seed = int(seed)
        self.fixed = fixed  # validation: the same items every epoch
        self.epoch = 0
        self._bad: set[Path] = set()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose items ``__getitem__`` returns (ignored for fixed sets)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, 0 if self.fixed else self.epoch + 1, int(index)])

    def _read(self, entry: AudioEntry, start: int, length: int) -> np.ndarray | None:
        if entry.path in self._bad:
            return None
        try:
            return read_segment(entry, start, length)
        except AudioError as err:
            self._bad.add(entry.path)
            log.warning("skipping bad file %s", err)
            return None

    def _pick(self, rng: np.random.Generator, pool: Sequence[AudioEntry]) -> AudioEntry:
        if not self._bad:  # the common case: no O(pool) filtering per item on large corpora
            return pool[int(rng.integers(len(pool)))]
        good = [e for e in pool if e.path not in self._bad]
        if not good:
            raise RuntimeError("every file of a training pool failed to read; see the warnings above")
        return good[int(rng.integers(len(good)))]


class MixingDataset(_EpochDataset):
    """Clean speech mixed with noise on the fly.

    Each item: a random clean file and segment, optionally reverberated with a random room impulse
    response, plus a random stretch of a random noise file (looped if short) at an SNR drawn uniformly
    from ``snr_db``; then a random gain brings the mixture's RMS to a level drawn from ``level_dbfs``
    (the same gain on the target, so the pair stays consistent), lowered if needed to keep the peak
    below 0.99.

    Items are ``(noisy, clean)`` float32 tensors ``[segment]`` at 16 kHz. With a RIR the target is the
    speech convolved with the direct path and early reflections (first 50 ms), the usual DNS-Challenge
    target: the network is asked to remove noise and late reverberation, not to un-colour the room.

    Args:
        clean, noise: indexed pools (see :func:`index_audio`).
        segment: item length in samples at 16 kHz.
        items: number of items per epoch.
        noise_span: ``(start, end)`` fractions of every noise file that this set may use; training
            and validation use disjoint spans of the same recordings.
        fixed: validation mode: items do not change with the epoch.
    """

    def __init__(
        self,
        clean: Sequence[AudioEntry],
        noise: Sequence[AudioEntry],
        *,
        segment: int,
        items: int,
        seed: int = 0,
        snr_db: tuple[float, float] = (-5.0, 20.0),
        level_dbfs: tuple[float, float] = (-35.0, -15.0),
        rirs: Sequence[AudioEntry] = (),
        rir_probability: float = 0.0,
        noise_span: tuple[float, float] = (0.0, 1.0),
        fixed: bool = False,
    ) -> None:
        super().__init__(items, seed, fixed)
        if not clean:
            raise ValueError("no usable clean speech files")
        if not noise:
            raise ValueError("no usable noise files")
        self.clean, self.noise, self.rirs = list(clean), list(noise), list(rirs)
        self.segment = int(segment)
        self.snr_db = (float(snr_db[0]), float(snr_db[1]))
        self.level_dbfs = (float(level_dbfs[0]), float(level_dbfs[1]))
        self.rir_probability = float(rir_probability) if self.rirs else 0.0
        self.noise_span = noise_span

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        speech, active = self._clean_segment(rng)
        target = speech
        if self.rir_probability and rng.random() < self.rir_probability:
            speech, target = self._reverberate(rng, speech)
        noise = self._noise_segment(rng)
        snr = rng.uniform(*self.snr_db)
        speech_rms = _rms(speech[:active])
        noise_rms = _rms(noise)
        if speech_rms > 1e-6 and noise_rms > 1e-9:
            noise = noise * (speech_rms / noise_rms / 10.0 ** (snr / 20.0))
        noisy = speech + noise
        gain = 10.0 ** (rng.uniform(*self.level_dbfs) / 20.0) / max(_rms(noisy), 1e-9)
        peak = float(np.max(np.abs(noisy))) * gain
        if peak > 0.99:  # never train on clipped mixtures
            gain *= 0.99 / peak
        return torch.from_numpy(noisy * gain).float(), torch.from_numpy(target * gain).float()

    def _clean_segment(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        for _ in range(_RETRIES):
            entry = self._pick(rng, self.clean)
            spare = entry.samples_16k - self.segment
            start = int(rng.integers(spare + 1)) if spare > 0 else 0
            data = self._read(entry, start, self.segment)
            if data is not None:
                return data, min(self.segment, entry.samples_16k)  # active = samples before zero padding
        raise RuntimeError(f"could not read clean speech after {_RETRIES} attempts; see the warnings above")

    def _noise_segment(self, rng: np.random.Generator) -> np.ndarray:
        for attempt in range(_RETRIES):
            entry = self._pick(rng, self.noise)
            lo = int(self.noise_span[0] * entry.samples_16k)
            hi = max(int(self.noise_span[1] * entry.samples_16k), lo + 1)
            span = hi - lo
            if span >= self.segment:
                data = self._read(entry, lo + int(rng.integers(span - self.segment + 1)), self.segment)
            else:  # short recording: loop its span from a random phase
                piece = self._read(entry, lo, span)
                if piece is not None:
                    reps = -(-(self.segment + span) // span)
                    data = np.roll(np.tile(piece, reps), -int(rng.integers(span)))[: self.segment]
                else:
                    data = None
            # A digitally silent stretch (clips padded with zeros) would make a noise-free "mixture".
            if data is not None and (_rms(data) > 1e-5 or attempt == _RETRIES - 1):
                return data
        raise RuntimeError(f"could not read noise after {_RETRIES} attempts; see the warnings above")

    def _reverberate(self, rng: np.random.Generator, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for _ in range(_RETRIES):
            entry = self._pick(rng, self.rirs)
            rir = self._read(entry, 0, min(entry.samples_16k, 2 * SAMPLE_RATE))
            if rir is None or not np.any(rir):
                continue
            rir = rir / (np.sqrt(np.sum(rir**2)) + 1e-9)
            direct = int(np.argmax(np.abs(rir)))
            early = rir[: direct + int(0.05 * SAMPLE_RATE)]
            return _fft_convolve(speech, rir), _fft_convolve(speech, early)
        return speech, speech


class PairedDataset(_EpochDataset):
    """Noisy/clean file pairs, matched by relative path (``a/b.wav`` in both folders), else by name.

    Training items are random segments of random pairs; with ``fixed=True`` (validation) item ``i`` is
    the first ``segment`` samples of pair ``i mod len(pairs)``. Items are ``(noisy, clean)`` float32
    tensors ``[segment]`` at 16 kHz, zero-padded past the end of the shorter file.
    """

    def __init__(
        self,
        pairs: Sequence[tuple[AudioEntry, AudioEntry]],
        *,
        segment: int,
        items: int,
        seed: int = 0,
        fixed: bool = False,
    ) -> None:
        super().__init__(items, seed, fixed)
        if not pairs:
            raise ValueError("no usable noisy/clean pairs")
        self.pairs = list(pairs)
        self.segment = int(segment)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = self.rng(index)
        for attempt in range(_RETRIES):
            good = [p for p in self.pairs if p[0].path not in self._bad and p[1].path not in self._bad]
            if not good:
                break
            if self.fixed and attempt == 0:
                noisy_e, clean_e = self.pairs[index % len(self.pairs)]
            else:
                noisy_e, clean_e = good[int(rng.integers(len(good)))]
            usable = min(noisy_e.samples_16k, clean_e.samples_16k)
            spare = usable - self.segment
            start = int(rng.integers(spare + 1)) if spare > 0 and not self.fixed else 0
            noisy = self._read(noisy_e, start, self.segment)
            clean = self._read(clean_e, start, self.segment)
            if noisy is not None and clean is not None:
                if usable < self.segment:  # pad both where either file has ended
                    noisy[usable:] = 0.0
                    clean[usable:] = 0.0
                return torch.from_numpy(noisy), torch.from_numpy(clean)
        raise RuntimeError("could not read any noisy/clean pair; see the warnings above")


def match_pairs(noisy_dir: str | Path, clean_dir: str | Path) -> list[tuple[AudioEntry, AudioEntry]]:
    """Indexed ``(noisy, clean)`` pairs of two folders by :func:`denoise.pairing.pair_folders` (recursive).

    Noisy files without a clean partner and unreadable files are reported with a warning and left out.
    """
    pairs = pair_folders(noisy_dir, clean_dir, recursive=True)
    unmatched = [p.noisy.name for p in pairs if p.clean is None]
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" …" if len(unmatched) > 5 else "")
        log.warning(
            "%d noisy file(s) have no clean partner in %s and are skipped: %s",
            len(unmatched),
            clean_dir,
            shown,
        )
    matched = [p for p in pairs if p.clean is not None]
    noisy = {e.path: e for e in index_audio([p.noisy for p in matched], what="noisy")}
    clean = {e.path: e for e in index_audio([p.clean for p in matched], what="clean")}
    return [(noisy[p.noisy], clean[p.clean]) for p in matched if p.noisy in noisy and p.clean in clean]


def build_datasets(cfg: FinetuneConfig, hop: int) -> tuple[_EpochDataset, _EpochDataset]:
    """Training dataset (changes each epoch) and fixed validation dataset, from ``cfg.data``.

    Segments are whole multiples of ``hop``: both networks then return exactly as many samples as
    they were given.
    """
    d = cfg.data
    segment = segment_length(d.segment_seconds, hop)
    val_segment = segment_length(d.val_segment_seconds, hop)
    if d.kind == "paired":
        return _paired_datasets(cfg, segment, val_segment)
    clean = index_audio(audio_files(d.clean_dir, recursive=True), what="clean speech")
    noise = index_audio(audio_files(d.noise_dir, recursive=True, patterns=d.noise_files), what="noise")
    if not noise:
        raise FileNotFoundError(
            f"no usable noise files in {d.noise_dir} (patterns: {d.noise_files or 'all'})"
        )
    rirs = index_audio(audio_files(d.rir_dir, recursive=True), what="RIR") if d.rir_dir else []
    train_clean, val_clean = split_files(clean, d.val_fraction)
    split = 1.0 - d.val_fraction
    common = dict(
        snr_db=tuple(d.snr_db), level_dbfs=tuple(d.level_dbfs), rirs=rirs, rir_probability=d.rir_probability
    )
    train = MixingDataset(
        train_clean, noise, segment=segment, items=d.items_per_epoch, seed=cfg.seed, noise_span=(0.0, split),
        **common,
    )  # fmt: skip
    val = MixingDataset(
        val_clean, noise, segment=val_segment, items=d.val_items, seed=cfg.seed + 7919,
        noise_span=(split, 1.0), fixed=True, **common,
    )  # fmt: skip
    return train, val


def _paired_datasets(
    cfg: FinetuneConfig, segment: int, val_segment: int
) -> tuple[_EpochDataset, _EpochDataset]:
    d = cfg.data
    pairs = match_pairs(d.noisy_dir, d.clean_dir)
    if d.val_noisy_dir:
        val_pairs = match_pairs(d.val_noisy_dir, d.val_clean_dir or d.clean_dir)
    else:
        held = {e.path for e in split_files([p[0] for p in pairs], d.val_fraction)[1]}
        val_pairs = [p for p in pairs if p[0].path in held]
        pairs = [p for p in pairs if p[0].path not in held]
    train = PairedDataset(pairs, segment=segment, items=d.items_per_epoch, seed=cfg.seed)
    val = PairedDataset(
        val_pairs,
        segment=val_segment,
        items=min(d.val_items, len(val_pairs)),
        seed=cfg.seed + 7919,
        fixed=True,
    )
    return train, val
