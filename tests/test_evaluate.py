"""Folder evaluation: pairing rules, CI arithmetic, CSV/summary/report outputs, bad files, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import shared_path

from denoise import evaluate
from denoise.audio import resample
from denoise.evaluate import EvalConfig, summarize_column

SR = 16000


# ------------------------------------------------------------------------------------------- pairing


# Pairing rules (VoiceBank / DNS names, enhanced folders, nothing guessed) are tested in test_pairing.py.


def test_confidence_interval_known_values() -> None:
    s = summarize_column("x", [1.0, 2.0, 3.0, 4.0, 5.0, float("nan")])  # NaN is left out
    assert (s.n, s.mean) == (5, 3.0)
    assert s.std == pytest.approx(math.sqrt(2.5))
    # t(0.975, 4) = 2.776445 -> half-width 2.776445 * sqrt(2.5) / sqrt(5)
    assert s.ci95 == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)
    assert (s.low, s.high) == pytest.approx((3.0 - s.ci95, 3.0 + s.ci95))
    one = summarize_column("y", [2.0])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.ci95)
    assert summarize_column("z", []).n == 0


# ---------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    """Two real speech pairs (one noisy file at 24 kHz), a 0.15 s pair, a corrupt file, and 'enhanced'
    outputs that carry half the noise amplitude of the input (a +6 dB SI-SNR improvement by construction)."""
    root = tmp_path_factory.mktemp("evalset")
    for sub in ("clean", "noisy", "enh"):
        (root / sub).mkdir()
    rng = np.random.default_rng(0)
    sources = {
        "p232_001": shared_path("audio", "clean_speech", "speechbrain__ASR__spk1_snt1.wav"),
        "p232_002": shared_path("audio", "clean_speech", "speechbrain__ASR__spk2_snt1.wav"),
    }
    for stem, src in sources.items():
        clean, sr = sf.read(src, dtype="float32")
        assert sr == SR
        clean = clean[: int(2.4 * SR)]  # 2.4 s: DNSMOS tiles it to 9.6 s, a single 9 s window
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= 0.5 * np.sqrt(np.mean(clean**2) / np.mean(noise**2))  # 6 dB SNR
        sf.write(root / "clean" / f"{stem}.wav", clean, SR)
        noisy = clean + noise
        if stem == "p232_002":  # mixed sample rates, as in the shared VoiceBank-DEMAND subset
            sf.write(root / "noisy" / f"{stem}.wav", resample(noisy, SR, 24000), 24000, subtype="FLOAT")
        else:
            sf.write(root / "noisy" / f"{stem}.wav", noisy, SR, subtype="FLOAT")
        sf.write(root / "enh" / f"{stem}.wav", clean + 0.5 * noise, SR, subtype="FLOAT")
    short = np.asarray(rng.standard_normal((3, int(0.15 * SR))) * 0.1, dtype=np.float32)
    sf.write(root / "clean" / "p232_003.wav", short[0], SR)
    sf.write(root / "noisy" / "p232_003.wav", short[0] + short[1], SR)
    sf.write(root / "enh" / "p232_003.wav", short[0] + 0.5 * short[1], SR)
    (root / "noisy" / "p232_004.wav").write_bytes(b"RIFF\x00\x00garbage, not a wave file")
    return {name: root / name for name in ("clean", "noisy", "enh")}


@pytest.fixture(scope="module")
def folder_result(dataset, tmp_path_factory) -> evaluate.EvalResult:
    out = tmp_path_factory.mktemp("out")
    cfg = EvalConfig(
        noisy_dir=dataset["noisy"],
        clean_dir=dataset["clean"],
        enhanced_dir=dataset["enh"],
        out_dir=out,
        label="half-noise",
        progress=False,
        report_examples=2,
    )
    return evaluate.evaluate(cfg)


def test_evaluate_scores_and_skips(folder_result) -> None:
    rows = {r.file: r for r in folder_result.results}
    assert set(rows) == {"p232_001.wav", "p232_002.wav", "p232_003.wav", "p232_004.wav"}
    assert "not an audio file" in rows["p232_004.wav"].error  # reported and skipped, not a crash
    assert [r.file for r in folder_result.failed] == ["p232_004.wav"]
    for name in ("p232_001.wav", "p232_002.wav"):
        s = rows[name].scores
        # half the noise amplitude: +6.02 dB, up to the small random correlation of noise and speech
        assert s["si_snri"] == pytest.approx(6.02, abs=0.5)
        assert s["delta_pesq"] > 0 and s["delta_stoi"] > 0 and s["delta_dnsmos_bak"] > 0
        assert s["delta_pesq"] == pytest.approx(s["enhanced_pesq"] - s["noisy_pesq"])
    assert rows["p232_002.wav"].sample_rate == 24000  # scored after resampling to 16 kHz
    short = rows["p232_003.wav"]
    assert short.ok and math.isnan(short.scores["noisy_pesq"])
    assert any("too short" in n for n in short.notes)
    assert math.isfinite(short.scores["enhanced_dnsmos_ovrl"])  # DNSMOS copes with any length


def test_evaluate_writes_csv_summary_and_report(folder_result) -> None:
    paths = folder_result.paths
    with paths["csv"].open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 4
    assert {"file", "duration_s", "noisy_pesq", "enhanced_pesq", "delta_pesq", "si_snri", "error"} <= set(
        table[0]
    )
    assert float(next(r for r in table if r["file"] == "p232_003.wav")["duration_s"]) == pytest.approx(0.15)
    summary = json.loads(paths["summary_json"].read_text())
    assert summary["scored"] == 3 and summary["failed"] == {"p232_004.wav": folder_result.failed[0].error}
    si = summary["metrics"]["si_snri"]
    assert si["n"] == 3 and si["mean"] == pytest.approx(folder_result.mean("si_snri"), abs=1e-5)
    assert summary["metrics"]["delta_pesq"]["n"] == 2  # the 0.15 s file has no PESQ
    report = paths["report"].read_text()
    assert "half-noise" in report and "p232_004.wav" in report and "| si_snri |" in report
    pngs = sorted(p.name for p in (paths["report"].parent / "figures").glob("*.png"))
    assert "improvement.png" in pngs and len(pngs) == 3  # the plot + 2 spectrogram examples
    assert all((paths["report"].parent / "figures" / p).stat().st_size > 5000 for p in pngs)
    # the CSV reads back to the same numbers
    back = {r.file: r for r in evaluate.read_csv(paths["csv"])}
    assert back["p232_001.wav"].scores["si_snri"] == pytest.approx(
        folder_result.results[0].scores["si_snri"], abs=1e-4
    )


def test_evaluate_with_a_model_function(dataset, tmp_path: Path) -> None:
    calls = []

    def identity(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        calls.append(rate)
        return samples, rate

    cfg = EvalConfig(
        noisy_dir=dataset["noisy"],
        clean_dir=dataset["clean"],
        out_dir=tmp_path,
        dnsmos=False,
        save_enhanced=True,
        report=False,
        progress=False,
        exclude=("p232_003", "p232_004"),
    )
    result = evaluate.evaluate(cfg, enhance=identity)
    assert sorted(calls) == [16000, 24000]  # the model sees each file at its own rate
    for r in result.results:  # doing nothing improves nothing
        assert r.scores["si_snri"] == pytest.approx(0.0, abs=0.05) and "dnsmos_ovrl" not in str(r.scores)
        assert r.scores["delta_pesq"] == pytest.approx(0.0, abs=0.05)
    assert sorted(p.name for p in (tmp_path / "enhanced").iterdir()) == ["p232_001.wav", "p232_002.wav"]
    with pytest.raises(ValueError, match="exactly one"):
        evaluate.evaluate(cfg)


def test_eval_command(dataset, tmp_path: Path, capsys) -> None:
    from denoise.cli import main

    out = tmp_path / "cli"
    args = ["eval", "-q", "--no-dnsmos", "--examples", "0", "--noisy", str(dataset["noisy"])]
    code = main(
        [*args, "--clean", str(dataset["clean"]), "--enhanced", str(dataset["enh"]), "--out", str(out)]
    )
    assert code == 1  # one file was skipped
    assert (out / "per_file.csv").exists() and (out / "summary.csv").exists() and (out / "report.md").exists()
    assert "| si_snri | 3 |" in capsys.readouterr().out
    assert (
        main(
            [
                "eval",
                "-q",
                "--noisy",
                str(tmp_path / "missing"),
                "--enhanced",
                str(tmp_path),
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_comparison_tables(folder_result) -> None:
    from denoise.report import comparison_table, improvement_table

    runs = {"half-noise": folder_result.config.out_dir}
    rows = comparison_table(runs).splitlines()
    assert (
        len(rows) == 4
        and rows[2].startswith("| noisy input | 2 |")
        and rows[3].startswith("| half-noise | 2 |")
    )
    pesq = next(s for s in folder_result.summary if s.metric == "enhanced_pesq")
    assert f"{pesq.mean:.2f} ± {pesq.ci95:.2f}" in rows[3]
    si = next(s for s in folder_result.summary if s.metric == "si_snri")
    assert f"{si.mean:+.2f} ± {si.ci95:.2f}" in improvement_table(runs).splitlines()[2]


def test_evaluate_folder_runs_the_engine(dataset, tmp_path: Path) -> None:
    # random GTCRN weights (weights=None): exercises the engine path end to end, not the model's quality
    result = evaluate.evaluate_folder(
        dataset["noisy"],
        tmp_path,
        clean=dataset["clean"],
        model="gtcrn",
        weights=None,
        engine_options={"device": "cpu", "threads": 1},
        exclude=("p232_003", "p232_004"),
        dnsmos=False,
        report=False,
        progress=False,
    )
    assert [r.file for r in result.results] == ["p232_001.wav", "p232_002.wav"]
    assert all(r.ok and math.isfinite(r.scores["enhanced_stoi"]) for r in result.results)
    assert result.config.label == "gtcrn (random weights)"


def test_paired_difference(folder_result, tmp_path: Path) -> None:
    out = folder_result.config.out_dir
    same = evaluate.paired_difference(out, out, ["enhanced_pesq", "si_snri"])
    assert [(s.metric, s.n, s.mean) for s in same] == [("enhanced_pesq", 2, 0.0), ("si_snri", 3, 0.0)]
    # B = A with every enhanced PESQ raised by 0.5 on one file only: mean +0.25 over the 2 common files
    rows = evaluate.read_csv(out / "per_file.csv")
    rows[0].scores["enhanced_pesq"] += 0.5
    evaluate.write_csv(tmp_path / "per_file.csv", rows)
    diff = evaluate.paired_difference(out, tmp_path, ["enhanced_pesq"])[0]
    assert diff.n == 2 and diff.mean == pytest.approx(0.25, abs=1e-4)


# ---------------------------------------------------------------------------------------------- plots


def test_log_spectrogram_puts_a_tone_in_its_bin() -> None:
    from denoise.plots import log_spectrogram

    sr, n_fft, hop = 16000, 512, 128
    t = np.arange(sr) / sr
    spec = log_spectrogram(np.sin(2 * np.pi * 1000.0 * t), n_fft, hop)
    assert spec.shape == (n_fft // 2 + 1, 1 + sr // hop)  # centred frames, like torch.stft(center=True)
    assert int(np.argmax(spec[:, spec.shape[1] // 2])) == round(1000.0 * n_fft / sr)  # bin 32


def test_spectrogram_figure_shows_the_full_band_of_the_files_rate(tmp_path) -> None:
    from denoise.plots import frame_sizes, save_png, spectrogram_figure

    x = np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    fig = spectrogram_figure({"noisy": x, "enhanced": 0.1 * x}, 48000, "full band")
    panels = [ax for ax in fig.axes if ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in panels] == ["noisy", "enhanced"]
    assert panels[0].get_ylim()[1] == pytest.approx(24.0, abs=0.1)  # kHz: the 48 kHz file's Nyquist
    assert frame_sizes(16000) == (512, 128) and frame_sizes(48000) == (2048, 512)
    png = save_png(fig, tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no signals"):
        spectrogram_figure({}, 16000)


def test_eval_reports_full_band_metrics_above_16k_only(tmp_path: Path) -> None:
    """Two real 48 kHz pairs get finite full-band columns (CSV, summary, report with a full-band
    spectrogram); a 16 kHz pair in the same run leaves them empty."""
    dev = shared_path("eval", "fullband48k_dev")
    for kind in ("noisy", "clean"):
        (tmp_path / kind).mkdir()
        for name in ("fbdev_01", "fbdev_08"):
            x, sr = sf.read(dev / kind / f"{name}.wav", dtype="float32")
            sf.write(tmp_path / kind / f"{name}.wav", x[: 2 * sr], sr)
        sf.write(tmp_path / kind / "narrow.wav", resample(x[: 2 * sr], sr, 16000), 16000)
    rates: list[int] = []

    def low_pass(samples: np.ndarray, rate: int) -> tuple[np.ndarray, int]:  # a band-limited "model"
        rates.append(rate)
        return resample(resample(samples, rate, 16000), 16000, rate)[: samples.size], rate

    cfg = EvalConfig(
        noisy_dir=tmp_path / "noisy",
        clean_dir=tmp_path / "clean",
        out_dir=tmp_path / "out",
        dnsmos=False,
        report_examples=1,
        progress=False,
    )
    result = evaluate.evaluate(cfg, enhance=low_pass)
    assert sorted(rates)[-1] == 48000
    with (tmp_path / "out" / "per_file.csv").open(newline="") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    columns = [f"{w}_{m}" for w in ("noisy", "enhanced", "delta") for m in ("fb_si_sdr", "hf_lsd")]
    columns += ["enhanced_hf_energy_db", "delta_hf_segsnr", "enhanced_lb_si_sdr"]
    for name in ("fbdev_01.wav", "fbdev_08.wav"):
        assert all(math.isfinite(float(rows[name][c])) for c in columns), rows[name]
        assert float(rows[name]["enhanced_hf_energy_db"]) < -40.0  # the band a 16 kHz model deletes
    assert all(rows["narrow.wav"][c] == "" for c in columns)  # NaN: nothing above 8 kHz to score
    assert (
        result.mean("enhanced_hf_lsd") > 10.0
        and "fb_si_sdr" in (tmp_path / "out" / "summary.csv").read_text()
    )
    report = (tmp_path / "out" / "report.md").read_text()
    assert "hf_lsd" in report and "figures/" in report
