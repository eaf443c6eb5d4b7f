"""Metrics against known values: PESQ maximum, SI-SNR closed forms and invariances, STOI, DNSMOS offline."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, shared_path

from denoise import metrics
from denoise.audio import resample

SR = metrics.SAMPLE_RATE


def tone(freq: float, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """A sine with an integer number of periods in ``seconds``: zero-mean, orthogonal to other such tones."""
    t = np.arange(int(seconds * sr)) / sr
    return np.sin(2 * np.pi * freq * t)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """~2.9 s of real clean speech at 16 kHz (LibriSpeech sample from the shared pool)."""
    x, sr = sf.read(shared_path("audio", "clean_speech", "speechbrain__ASR__spk1_snt1.wav"), dtype="float64")
    assert sr == SR
    return x


def noise_at_snr(clean: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(len(clean))
    n *= np.sqrt(np.mean(clean**2) / np.mean(n**2)) * 10 ** (-snr_db / 20)
    return n


# -------------------------------------------------------------------------------------------- SI-SNR


@pytest.mark.parametrize(
    ("gain", "noise_amp", "expected_db"),
    [(1.0, 0.1, 20.0), (3.0, 1.0, 20 * math.log10(3)), (0.5, 2.0, -12.0412)],
)
def test_si_snr_closed_form(gain: float, noise_amp: float, expected_db: float) -> None:
    # est = g·s + a·n with s ⟂ n and equal power: the projection is exactly g·s, SI-SNR = 20·log10(g / a).
    s, n = tone(440.0), tone(1000.0)
    assert abs(np.dot(s, n)) < 1e-8  # the construction really is orthogonal
    assert metrics.si_snr(reference=s, estimate=gain * s + noise_amp * n) == pytest.approx(
        expected_db, abs=1e-6
    )


def test_si_snr_unequal_power_closed_form() -> None:
    # Reference 0.2·sin(440), interferer 0.05·sin(3000) -> 20·log10(0.2 / 0.05) = 12.0412 dB.
    s, n = 0.2 * tone(440.0), 0.05 * tone(3000.0)
    assert metrics.si_snr(reference=s, estimate=s + n) == pytest.approx(20 * math.log10(4), abs=1e-6)


def test_si_snr_is_scale_invariant() -> None:
    rng = np.random.default_rng(1)
    s = rng.standard_normal(16000)
    est = s + 0.3 * rng.standard_normal(16000)
    base = metrics.si_snr(reference=s, estimate=est)
    for k in (1e-3, 0.5, 7.0, -1.0):  # gain and sign flip of the estimate
        assert metrics.si_snr(reference=s, estimate=k * est) == pytest.approx(base, abs=1e-9)
    # scaling the reference does not matter either, nor does a DC offset (both are made zero-mean)
    assert metrics.si_snr(reference=4.0 * s, estimate=est) == pytest.approx(base, abs=1e-9)
    assert metrics.si_snr(reference=s, estimate=est + 0.25) == pytest.approx(
        metrics.si_snr(reference=s - s.mean(), estimate=est - est.mean()), abs=1e-9
    )


def test_si_snr_extremes_and_errors() -> None:
    s = tone(440.0)
    assert metrics.si_snr(reference=s, estimate=-2.0 * s) == math.inf
    with pytest.raises(metrics.MetricUnavailable, match="silent"):
        metrics.si_snr(reference=np.zeros(1000), estimate=s[:1000])
    with pytest.raises(metrics.MetricUnavailable, match="silent"):
        metrics.si_snr(reference=s, estimate=np.full_like(s, 0.3))
    with pytest.raises(ValueError, match="shape"):
        metrics.si_snr(reference=np.zeros((2, 100)), estimate=np.zeros((2, 100)))


def test_si_snr_takes_keywords_only() -> None:
    # SI-SNR is not symmetric and the two orders were once both in use: positional calls are refused
    s = tone(440.0)
    with pytest.raises(TypeError):
        metrics.si_snr(s, s)  # type: ignore[misc]


def test_si_snr_aligns_lengths_and_rates() -> None:
    s, n = tone(440.0), tone(1000.0)
    est = s + 0.1 * n
    longer = np.concatenate([est, np.zeros(321)])  # trailing samples beyond the reference are ignored
    assert metrics.si_snr(reference=s, estimate=longer) == pytest.approx(20.0, abs=1e-6)
    # the same estimate delivered at 48 kHz is resampled to 16 kHz first
    est_48k = resample(est.astype(np.float32), SR, 48000)
    assert metrics.si_snr(reference=s, estimate=est_48k, est_sr=48000) == pytest.approx(20.0, abs=0.1)


def test_si_snr_improvement_known_value() -> None:
    s, n = tone(440.0), tone(1000.0)
    # the residual halves in amplitude: +6.0206 dB
    assert metrics.si_snr_improvement(s, s + 0.4 * n, s + 0.2 * n) == pytest.approx(
        20 * math.log10(2), abs=1e-6
    )
    assert metrics.si_snr_improvement(s, s + 0.4 * n, 0.01 * (s + 0.4 * n)) == pytest.approx(0.0, abs=1e-9)


# ---------------------------------------------------------------------------------------------- PESQ


def test_pesq_of_a_signal_against_itself_is_the_maximum(speech: np.ndarray) -> None:
    best = metrics.pesq_wb(speech, speech)
    assert best == pytest.approx(metrics.PESQ_WB_MAX, abs=1e-3)
    scores = [metrics.pesq_wb(speech, speech + noise_at_snr(speech, snr)) for snr in (20.0, 5.0)]
    assert best > scores[0] > scores[1] >= 1.0  # and it falls monotonically with the noise level


def test_pesq_resamples_the_reference(speech: np.ndarray) -> None:
    ref_48k = resample(speech.astype(np.float32), SR, 48000)
    assert metrics.pesq_wb(ref_48k, speech, sr=48000, est_sr=SR) > 4.5


def test_pesq_reports_short_and_silent_input(speech: np.ndarray) -> None:
    with pytest.raises(metrics.MetricUnavailable, match="too short"):
        metrics.pesq_wb(speech[:3000], speech[:3000])  # 0.19 s < PESQ's 0.25 s minimum
    with pytest.raises(metrics.MetricUnavailable, match="silence"):
        metrics.pesq_wb(np.zeros(SR), speech[:SR])


# ---------------------------------------------------------------------------------------------- STOI


def test_stoi_and_estoi(speech: np.ndarray) -> None:
    assert metrics.stoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    assert metrics.estoi(speech, speech) == pytest.approx(1.0, abs=1e-6)
    noisy = speech + noise_at_snr(speech, -5.0)
    assert metrics.stoi(speech, noisy) < 0.9
    assert metrics.estoi(speech, noisy) < metrics.stoi(speech, noisy)  # eSTOI is the stricter of the two
    with pytest.raises(metrics.MetricUnavailable, match="too little"):
        metrics.stoi(speech[:2000], speech[:2000])


def test_intrusive_scores_turn_failures_into_nan_with_a_note(speech: np.ndarray) -> None:
    scores, notes = metrics.intrusive_scores(speech[:3000], speech[:3000])
    assert math.isnan(scores["pesq"]) and math.isnan(scores["stoi"])
    assert math.isinf(scores["si_snr"])
    assert any("PESQ" in n for n in notes) and any("STOI" in n for n in notes)


# -------------------------------------------------------------------------------------------- DNSMOS

_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, urllib.request

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    try:
        urllib.request.urlopen("http://example.com", timeout=1)
        sys.exit("the network is still reachable: the test would prove nothing")
    except OSError:
        pass

    import numpy as np
    import soundfile as sf
    from denoise import metrics
    from denoise.audio import resample

    speech, sr = sf.read(sys.argv[1], dtype="float32")
    rng = np.random.default_rng(0)
    white = (0.05 * rng.standard_normal(3 * sr)).astype(np.float32)
    out = {
        "speech": metrics.dnsmos(speech, sr).as_dict(),
        "white": metrics.dnsmos(white, sr).as_dict(),
        "speech_48k": metrics.dnsmos(resample(speech, sr, 48000), 48000).as_dict(),
        "short": metrics.dnsmos(speech[: sr // 2], sr).as_dict(),
        "long": metrics.dnsmos(np.tile(speech, 5)[: 12 * sr], sr).as_dict(),
    }
    print(json.dumps(out))
    """
)


def _offline_prefix() -> list[str]:
    """``unshare -rn`` (a new network namespace with no interfaces) where the kernel allows it."""
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    ):
        return ["unshare", "-rn"]
    return []  # sockets are still blocked inside the script


@pytest.fixture(scope="module")
def offline_dnsmos() -> dict[str, dict[str, float]]:
    wav = shared_path("audio", "clean_speech", "speechbrain__ASR__spk1_snt1.wav")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*_offline_prefix(), sys.executable, "-c", _OFFLINE_SCRIPT, str(wav)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_dnsmos_runs_offline_and_ranks_white_noise_below_speech(offline_dnsmos) -> None:
    speech, white = offline_dnsmos["speech"], offline_dnsmos["white"]
    for scores in offline_dnsmos.values():
        assert set(scores) == {"sig", "bak", "ovrl", "p808"}
        assert all(1.0 <= v <= 5.0 for v in scores.values())
    assert speech["ovrl"] > white["ovrl"] + 1.0
    assert speech["bak"] > white["bak"] + 1.0
    assert speech["p808"] > white["p808"]


def test_dnsmos_any_length_and_rate(offline_dnsmos) -> None:
    speech = offline_dnsmos["speech"]
    # the same clip at 48 kHz is resampled to 16 kHz: nearly the same scores
    assert offline_dnsmos["speech_48k"]["ovrl"] == pytest.approx(speech["ovrl"], abs=0.1)
    # 0.5 s (repeated up to the 9 s model window) and 12 s (4 windows, 1 s hop, averaged) both give scores
    assert offline_dnsmos["short"]["ovrl"] > 1.0
    assert offline_dnsmos["long"]["ovrl"] == pytest.approx(speech["ovrl"], abs=0.5)


def test_dnsmos_rejects_empty_input() -> None:
    with pytest.raises(metrics.MetricUnavailable, match="empty"):
        metrics.dnsmos(np.zeros(0, dtype=np.float32), SR)
