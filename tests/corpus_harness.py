"""Machinery for the corpus tests (:mod:`test_corpus`): short real clips to process, a loopback Ray cluster
started with ``ray start``, an S3 server (moto), and the ``denoise corpus`` command run in its own session.

Every process started here runs in its own session and is SIGKILLed by session id: nothing is stopped by
name (``ray stop`` would stop other people's clusters on a shared machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf
from conftest import REPO, shared_path

from denoise.corpus.records import read_manifest
from denoise_models.atomic import atomic_write_bytes


def make_clips(folder: Path, count: int, *, seconds: float = 1.0) -> list[Path]:
    """``count`` short real clips cut from the VoiceBank-DEMAND noisy test set (mixed rates, written now)."""
    sources = sorted(shared_path("eval", "vbd", "noisy").glob("*.wav"))
    folder.mkdir(parents=True, exist_ok=True)
    clips = []
    for k in range(count):
        audio, rate = sf.read(sources[k % len(sources)], dtype="float32")
        start = (k // len(sources)) * int(seconds * rate)
        clip = folder / f"sub{k % 3}" / f"clip_{k:03d}.wav"
        clip.parent.mkdir(exist_ok=True)
        sf.write(clip, audio[start : start + int(seconds * rate)], rate, subtype="PCM_16")
        clips.append(clip)
    return clips


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (what a test started, and nothing else)."""
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid != os.getpid() and os.getsid(proc.pid) == sid:
                proc.kill()


def session_alive(sid: int) -> bool:
    import psutil

    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Keep every address on loopback: Ray otherwise swaps 127.0.0.1 for the host's routable address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A busy 2-core CI box starts Python processes slowly; give workers time to register.
    "RAY_worker_register_timeout_seconds": "300",
    "RAY_agent_register_timeout_ms": "300000",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _node_ports() -> dict[str, int]:
    names = (
        "node-manager",
        "object-manager",
        "dashboard-agent-listen",
        "dashboard-agent-grpc",
        "runtime-env-agent",
    )
    return {f"--{name}-port": free_port() for name in (*names, "metrics-export")}


def _announce_agent_ports(temp_dir: Path, node_id: str, runtime_env_port: int, stop: threading.Event) -> None:
    """Write the agent port files the raylet waits for, as soon as the session folder exists.

    The raylet gives its Python agents a fixed 30 s to start and announce their ports, then aborts; on a
    CPU-starved CI box their imports alone take longer. The runtime-env agent is started on a port we
    chose, so that one is known; the dashboard agent's HTTP and metrics services are not used here and
    are announced as off (-1). The agents later write the same files themselves.
    """
    values = {
        "runtime_env_agent_port": runtime_env_port,
        "dashboard_agent_listen_port": -1,
        "metrics_agent_port": -1,
        "metrics_export_port": -1,
    }
    while not stop.wait(0.05):
        for session in temp_dir.glob("session_2*"):
            for name, value in values.items():
                target = session / f"{name}_{node_id}"
                if not target.exists():
                    with contextlib.suppress(OSError):
                        atomic_write_bytes(target, str(value).encode())


# `ray start` with loopback kept as loopback. Ray replaces 127.0.0.1 by the host's routable address, and
# only its single-node switch (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) stops that, which `ray start --address`
# then refuses; so the joining node gets the cluster switch on and an identity address resolver.
RAY_START = (
    "import sys, ray._private.ray_constants as c, ray._private.services as s;"
    "c.ENABLE_RAY_CLUSTER = True; s.resolve_ip_for_localhost = lambda host: host;"
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


def ray_start(args: list[str], temp_dir: Path, env: dict[str, str], attempts: int = 3) -> int:
    """Run ``ray start`` in a new session; returns the session id its daemons live in."""
    last = ""
    for _ in range(attempts):
        node_id = os.urandom(28).hex()
        ports = _node_ports()
        stop = threading.Event()
        announcer = threading.Thread(
            target=_announce_agent_ports,
            args=(temp_dir, node_id, ports["--runtime-env-agent-port"], stop),
            daemon=True,
        )
        announcer.start()
        log = temp_dir / f"ray-start-{node_id[:8]}.log"
        with log.open("w") as sink:  # not a pipe: the daemons inherit it and would hold it open
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    RAY_START,
                    "start",
                    *args,
                    f"--temp-dir={temp_dir}",
                    "--disable-usage-stats",
                    *(f"{flag}={port}" for flag, port in ports.items()),
                ],
                env={**env, "RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id},
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pass
        finally:
            stop.set()
            announcer.join()
        if proc.returncode == 0:
            return proc.pid
        kill_session(proc.pid)  # a half-started node: its GCS/agents must not linger
        last = log.read_text()[-2000:]
    pytest.fail(f"ray start {' '.join(args[:2])} failed {attempts} times:\n{last}")


class RayCluster:
    """A head node and optional worker nodes on 127.0.0.1, each in its own session."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.sessions: list[int] = []

    def start_head(self) -> None:
        self.sessions.append(
            ray_start(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={self.port}",
                    "--num-cpus=1",
                    "--include-dashboard=false",
                    f"--dashboard-port={free_port()}",
                    f"--ray-client-server-port={free_port()}",
                    "--include-log-monitor=false",
                ],
                self.root,
                self.env,
            )
        )

    def add_node(self) -> int:
        sid = ray_start(
            [f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1"],
            self.root,
            self.env,
        )
        self.sessions.append(sid)
        return sid

    def kill_all(self) -> None:
        for sid in reversed(self.sessions):
            kill_session(sid)


def loopback_env() -> dict[str, str]:
    """This process's environment for cluster processes: Ray kept on loopback, this checkout importable."""
    return {
        **os.environ,
        **RAY_ENV,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }


@contextlib.contextmanager
def loopback_cluster(env: dict[str, str]) -> Iterator[RayCluster]:
    """A started head node; every node of the cluster is killed and its folder removed on exit."""
    # Ray's socket paths must stay under 108 bytes: a short folder directly in the temp dir.
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    cluster = RayCluster(root, env)
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.kill_all()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def moto_s3(env: dict[str, str]) -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    server = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("moto_server did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        kill_session(proc.pid)


def corpus_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "denoise", "corpus", "--model", "gtcrn", "--quiet", *args]


def start_corpus_cli(args: list[str], env: dict[str, str], *, capture: bool = True) -> subprocess.Popen:
    """``denoise corpus`` in a new session (end it with :func:`kill_session`); output piped or discarded."""
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        corpus_command(*args),
        env=env,
        stdout=output,
        stderr=output,
        text=True,
        start_new_session=True,
    )


def run_corpus_cli(args: list[str], env: dict[str, str], timeout: float = 400) -> subprocess.CompletedProcess:
    proc = start_corpus_cli(args, env)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        kill_session(proc.pid)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_rows(
    manifest: Path, count: int, proc: subprocess.Popen, timeout: float = 300, nodes: int = 1
) -> list[dict]:
    """The manifest's rows once it has ``count`` of them from at least ``nodes`` Ray nodes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = read_manifest(manifest)
        if (len(rows) >= count and len({r["node"] for r in rows}) >= nodes) or proc.poll() is not None:
            return rows
        time.sleep(0.2)
    pytest.fail(f"no {count} manifest rows within {timeout} s")
