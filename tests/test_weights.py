"""Weights: manifest identities, resolution order, verified downloads over real HTTP, checkpoint formats."""

from __future__ import annotations

import hashlib
import http.server
import pickle
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import shared_path

from denoise_models import WeightsError, load_model, manifest
from denoise_models.weights import (
    fetch,
    read_checkpoint,
    register_local,
    resolve_weights,
    save_checkpoint,
    store_dir,
)


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty store, no mirror, and never touches the internet."""
    store = tmp_path / "store"
    monkeypatch.setenv("DENOISE_WEIGHTS_DIR", str(store))
    monkeypatch.delenv("DENOISE_WEIGHTS_MIRROR", raising=False)
    monkeypatch.setenv("DENOISE_WEIGHTS_OFFLINE", "1")
    return store


@pytest.fixture
def http_mirror() -> Iterator[callable]:
    """Serve a directory over HTTP on loopback; yields ``serve(dir) -> base_url``."""
    servers = []

    def serve(directory: Path) -> str:
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        handler.log_message = lambda *a, **k: None  # keep test output clean
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_manifest_matches_mirror_hashes() -> None:
    sums = shared_path("weights", "SHA256SUMS").read_text().split("\n")
    published = dict(reversed(line.split()) for line in sums if line.strip())
    entries = manifest()
    for name in ("gtcrn_dns3", "gtcrn_dns3_stream", "gtcrn_vctk"):
        assert entries[name].sha256 == published[entries[name].file]
    frcrn = entries["frcrn_official"]
    assert frcrn.sha256 == "477a2f82019b0a2b5bdd51541405d7e585a1f0355e162f3b46bf5c20d79fd612"
    assert frcrn.size == 57_991_225 and frcrn.arch == "frcrn"


def test_download_from_loopback_mirror_verifies_and_is_atomic(
    http_mirror, monkeypatch, isolated_store
) -> None:
    base = http_mirror(shared_path("weights"))
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", base)
    path = fetch("gtcrn_dns3", progress=False)
    assert path.parent == isolated_store
    assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest()["gtcrn_dns3"].sha256
    assert not list(isolated_store.glob("*.part")), "temp files must not be left behind"
    # second resolution is local: works with the server gone
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", "http://127.0.0.1:9/")
    assert resolve_weights("gtcrn_dns3") == path


def test_corrupted_download_is_refused(http_mirror, monkeypatch, tmp_path, isolated_store) -> None:
    bad = tmp_path / "bad_mirror"
    bad.mkdir()
    data = bytearray(shared_path("weights", "gtcrn_vctk.tar").read_bytes())
    data[1000] ^= 0xFF  # same size, one flipped byte
    (bad / "gtcrn_vctk.tar").write_bytes(bytes(data))
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", http_mirror(bad))
    with pytest.raises(WeightsError, match="sha256") as err:
        fetch("gtcrn_vctk", progress=False)
    assert "Fixes" in str(err.value)
    assert not (isolated_store / "gtcrn_vctk.tar").exists()
    assert not list(isolated_store.glob("*.part"))


def test_unreachable_mirror_lists_every_place_tried(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", f"http://127.0.0.1:9/ {tmp_path / 'nowhere'}")
    with pytest.raises(WeightsError) as err:
        fetch("gtcrn_dns3", progress=False)
    text = str(err.value)
    assert "http://127.0.0.1:9/gtcrn_dns3.tar" in text
    assert str(tmp_path / "nowhere" / "gtcrn_dns3.tar") in text
    assert "--model gtcrn" in text and "DENOISE_WEIGHTS_MIRROR" in text


def test_directory_mirror_then_tampered_store_is_detected(monkeypatch, isolated_store) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    path = fetch("gtcrn_dns3_stream", progress=False)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))  # changes mtime, so the verification stamp no longer applies
    monkeypatch.delenv("DENOISE_WEIGHTS_MIRROR")
    with pytest.raises(WeightsError, match="sha256"):
        fetch("gtcrn_dns3_stream", progress=False)


def test_frcrn_official_is_unavailable_here_with_a_clear_message() -> None:
    with pytest.raises(WeightsError, match="frcrn_official") as err:
        load_model("frcrn")
    assert "fetch-weights frcrn_official" in str(err.value)


def test_released_and_trainer_formats_load(tmp_path) -> None:
    fixture = shared_path("fixtures", "frcrn", "frcrn_testweights_seed0.pt")
    net = load_model("frcrn", weights=fixture)
    released = torch.load(fixture, weights_only=True)
    # ModelScope's trainer wraps the same tensors as {'state_dict': {'model.<key>': ...}}
    trainer = tmp_path / "trainer.pth"
    torch.save({"state_dict": {f"model.{k}": v for k, v in released.items()}, "epoch": 3}, trainer)
    net2 = load_model("frcrn", weights=trainer)
    x = torch.randn(1, 3200)
    with torch.inference_mode():
        torch.testing.assert_close(net(x), net2(x))


def test_missing_and_unexpected_keys_are_reported(tmp_path) -> None:
    state = torch.load(shared_path("weights", "gtcrn_dns3.tar"), weights_only=True, map_location="cpu")[
        "model"
    ]
    state = dict(state)
    removed = sorted(state)[0]
    del state[removed]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.tar"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsError) as err:
        load_model("gtcrn", weights=path)
    assert removed in str(err.value) and "extra.weight" in str(err.value)


def test_wrong_shapes_are_refused(tmp_path) -> None:
    state = dict(
        torch.load(shared_path("weights", "gtcrn_dns3.tar"), weights_only=True, map_location="cpu")["model"]
    )
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(3, 3, 3, 3)
    path = tmp_path / "misfit.tar"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_model("gtcrn", weights=path)


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/definitely/not/here",))


def test_a_weights_file_cannot_run_code(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"model": _Evil()}, fh)
    with pytest.raises(WeightsError, match="not a loadable weights file"):
        read_checkpoint(path)


def test_weights_of_another_architecture_are_refused(monkeypatch) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    with pytest.raises(WeightsError, match="for 'gtcrn', not 'frcrn'"):
        load_model("frcrn", weights="gtcrn_dns3")


def test_register_local_round_trip(tmp_path, monkeypatch, isolated_store) -> None:
    monkeypatch.setenv("DENOISE_WEIGHTS_MIRROR", str(shared_path("weights")))
    net = load_model("gtcrn", weights="gtcrn_dns3")
    with torch.no_grad():
        next(net.parameters()).add_(0.01)  # make it distinguishable from the published weights
    ckpt = save_checkpoint(tmp_path / "mine.pt", net, "gtcrn", {"description": "office fan"})
    register_local("office_fan", "gtcrn", ckpt)
    assert manifest()["office_fan"].local and (store_dir() / "office_fan.pt").is_file()
    again = load_model("gtcrn", weights="office_fan")
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(WeightsError, match="published"):
        register_local("gtcrn_dns3", "gtcrn", ckpt)
