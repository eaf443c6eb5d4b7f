"""`denoise export-onnx` and `denoise quantize` end to end on GTCRN (small, real weights)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import shared_path

pytest.importorskip("onnxruntime")


def test_export_then_quantize_commands(weights_mirror, tmp_path, capsys) -> None:
    from denoise.cli import main
    from denoise.export import read_metadata

    graph = tmp_path / "g.onnx"
    rc = main(
        ["export-onnx", "--model", "gtcrn", "--output", str(graph), "--quantize", "int8", "--no-quality"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "exported gtcrn (gtcrn_dns3_stream" in out and "SI-SNR vs torch" in out
    fp32 = json.loads((tmp_path / "g.onnx.parity.json").read_text())
    assert fp32["precision"] == "fp32" and fp32["max_abs_error"] < 1e-4
    int8 = json.loads((tmp_path / "g.int8.onnx.parity.json").read_text())
    assert int8["precision"] == "int8-dynamic" and int8["si_snr_db"] > 30

    rc = main(["quantize", str(graph), "--mode", "fp16", "--output", str(tmp_path / "h.onnx"), "--no-parity"])
    assert rc == 0 and read_metadata(tmp_path / "h.onnx").precision == "fp16"


def test_quantize_refuses_a_foreign_graph(tmp_path, capsys) -> None:
    from denoise.cli import main

    foreign = shared_path("weights", "gtcrn_simple_stream.onnx")  # no denoise metadata
    assert main(["quantize", str(foreign), "--output", str(tmp_path / "x.onnx")]) == 2
    assert "no 'denoise' metadata" in capsys.readouterr().err


def test_model_and_backend_choices_come_from_the_registries() -> None:
    """Every command's --model / --backend lists are the spec and backend registries, not copies."""
    import argparse

    from denoise.backends import BACKENDS
    from denoise.commands import bench, engine_options, export_onnx
    from denoise_models.spec import SPECS

    for add in (bench.add_arguments, engine_options.add_engine_arguments, export_onnx.add_arguments):
        parser = argparse.ArgumentParser()
        add(parser)
        actions = {a.dest: a for a in parser._actions}
        assert list(actions["model"].choices) == list(SPECS), add.__module__
        if "backend" in actions:
            assert list(actions["backend"].choices) == list(BACKENDS), add.__module__
