"""Machinery of the image smoke test: a private Docker engine, a stand-in CUDA base, a build-time server.

Nothing here is specific to pytest except the exceptions it raises for "cannot run here"
(:class:`Unavailable`), which the test turns into a skip (or a failure when the run demands the test).

What the smoke build substitutes, and why (everything else is the published Dockerfile as it is):

* base image: ``nvidia/cuda:<tag>`` cannot be pulled (no registry), so a Debian bookworm rootfs made
  with debootstrap is imported under exactly that tag. Ubuntu 22.04 and Debian 12 share the package
  names the Dockerfile installs (ca-certificates, curl, tini, python3-venv).
* ``ENV_BUILDER=venv``: no conda channel is reachable, so the env ``speech_frcrn_ans_cirm_16k`` is a venv
  of the base image's python3 (3.11, as environment.yml asks) at the same prefix, filled with
  environment.yml's pip part.
* ``TORCH_SPEC=torch==2.13.0+cpu`` with ``PIP_FIND_LINKS`` pointing at this machine's CPU wheel: PyPI's
  torch is a multi-GB CUDA build. torchaudio (pinned to torch 2.9.1) is left out of the smoke image.
* ``WEIGHTS`` without ``frcrn_official`` (not downloadable here) and ``WEIGHTS_MIRROR`` = the local mirror
  of the GTCRN weights, served over HTTP: the air-gapped build path of the real image.
* ``BUILD_CA_URL``: this machine's CA bundle, because pip's traffic goes through an intercepting CA. It
  is served, used and deleted inside each build step (docker/build-step), so no layer contains it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("DENOISE_IMAGE_TEST_CACHE", Path.home() / ".cache" / "denoise-image-test"))
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SUITE = "bookworm"


class Unavailable(RuntimeError):
    """The smoke test cannot run on this machine (the message says what is missing)."""


# ---------------------------------------------------------------------------------------------------
# facts read from the Dockerfile, so the test follows it instead of repeating it
# ---------------------------------------------------------------------------------------------------


def dockerfile_arg(name: str, dockerfile: Path = REPO / "Dockerfile") -> str:
    """The default value of ``ARG name=value`` in the Dockerfile (quotes removed)."""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        match = re.match(rf"\s*ARG\s+{re.escape(name)}=(.*)$", line)
        if match:
            return match.group(1).strip().strip('"')
    raise KeyError(f"{dockerfile} declares no ARG {name} with a default")


def dockerfile_env(name: str, dockerfile: Path = REPO / "Dockerfile") -> str:
    """The value given to ``name`` in an ``ENV`` instruction (``NAME=value`` form)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    for line in text.splitlines():
        if line.lstrip().startswith("ENV "):
            match = re.search(rf"(?:^|\s){re.escape(name)}=(\S+)", line)
            if match:
                return match.group(1)
    raise KeyError(f"{dockerfile} sets no ENV {name}")


# ---------------------------------------------------------------------------------------------------
# tools
# ---------------------------------------------------------------------------------------------------


def require_tools() -> dict[str, str]:
    """Paths of dockerd, a docker client and debootstrap; :class:`Unavailable` if something is missing."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (a private dockerd and debootstrap)")
    found = {
        "dockerd": shutil.which("dockerd"),
        # prefer the client that comes with Debian's dockerd: same API version
        "docker": "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker"),
        "debootstrap": shutil.which("debootstrap"),
    }
    missing = [name for name, path in found.items() if not path]
    if missing:
        raise Unavailable(f"{', '.join(missing)} not installed (apt-get install docker.io debootstrap)")
    return {name: str(path) for name, path in found.items()}


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.MULTILINE):
            uri = match.group(1)
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(cmd: list[str], *, timeout: float, log: Path | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd``; with ``log`` its output goes there (appended) and the error quotes its tail."""
    if log is None:
        return subprocess.run(cmd, check=True, timeout=timeout, capture_output=True, text=True, **kwargs)
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, timeout=timeout, stdout=fh, stderr=subprocess.STDOUT, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-60:])
        raise subprocess.CalledProcessError(proc.returncode, cmd, output=tail)
    return proc


# ---------------------------------------------------------------------------------------------------
# the stand-in base image
# ---------------------------------------------------------------------------------------------------


def standin_rootfs(tools: dict[str, str], log: Path) -> Path:
    """A tarball of a minimal Debian rootfs, made once with debootstrap and cached."""
    mirror = debian_mirror()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", mirror).strip("_")
    tarball = CACHE_DIR / f"{SUITE}-minbase-{slug}.tar"
    if tarball.is_file() and tarball.stat().st_size > 50_000_000:
        return tarball
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run([tools["debootstrap"], "--variant=minbase", SUITE, str(rootfs), mirror], timeout=900, log=log)
        partial = tarball.with_suffix(".tar.partial")
        run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300, log=log)
        partial.replace(tarball)
    return tarball


# ---------------------------------------------------------------------------------------------------
# a private Docker engine
# ---------------------------------------------------------------------------------------------------


class Docker:
    """A docker client bound to one private daemon."""

    def __init__(self, client: str, socket_path: Path, log: Path):
        self.client = client
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}", "DOCKER_BUILDKIT": "0"}
        self.log = log

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.client, *args], env=self.env, timeout=timeout, capture_output=True, text=True
        )
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"\n$ docker {' '.join(args)}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}")
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, args, proc.stdout, proc.stderr)
        return proc

    def logged(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        """A long command (build) whose output streams into the log file."""
        return run([self.client, *args], timeout=timeout, log=self.log, env=self.env)


@contextmanager
def private_dockerd(tools: dict[str, str], log: Path) -> Iterator[Docker]:
    """Start a dockerd with its own data root and socket; stop it and delete everything on exit.

    No iptables rules, no bridge: containers use ``--network=host`` or ``none``, which is all the
    smoke test needs, and the host's network configuration is left untouched.
    """
    data_root = Path(tempfile.mkdtemp(prefix="denoise-image-test-", dir="/var/tmp"))
    exec_root = Path(tempfile.mkdtemp(prefix="dn-", dir="/tmp"))  # short: containerd's socket lives here
    socket_path = exec_root / "docker.sock"
    daemon_log = log.with_name("dockerd.log")
    cmd = [
        tools["dockerd"],
        f"--data-root={data_root}",
        f"--exec-root={exec_root}",
        f"--pidfile={exec_root / 'docker.pid'}",
        f"--host=unix://{socket_path}",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--bridge=none",
        "--storage-driver=overlay2",
    ]
    with daemon_log.open("w", encoding="utf-8") as fh:
        daemon = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    docker = Docker(tools["docker"], socket_path, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if daemon.poll() is not None:
                raise Unavailable(f"dockerd exited ({daemon.returncode}): {daemon_log.read_text()[-1500:]}")
            if socket_path.exists() and docker("version", check=False, timeout=20).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise Unavailable(f"dockerd did not answer within 60 s: {daemon_log.read_text()[-1500:]}")
            time.sleep(0.5)
        yield docker
    finally:
        _stop_daemon(docker, daemon)
        for path in (data_root, exec_root):
            _unmount_below(path)  # e.g. netns/default, which dockerd leaves bind-mounted
            shutil.rmtree(path, ignore_errors=True)


def _unmount_below(path: Path) -> None:
    """Unmount whatever is still mounted inside ``path`` (deepest first)."""
    prefix = str(path).rstrip("/") + "/"
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    ]
    for mount_point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", mount_point], check=False, capture_output=True, timeout=30)


def _stop_daemon(docker: Docker, daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        ids = docker("ps", "-aq", check=False).stdout.split()
        if ids:
            docker("rm", "-f", *ids, check=False, timeout=120)
        images = docker("images", "-aq", check=False).stdout.split()
        if images:
            docker("rmi", "-f", *sorted(set(images)), check=False, timeout=300)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=30)


# ---------------------------------------------------------------------------------------------------
# what the build fetches: weights mirror, torch wheel, CA bundle -- over HTTP on the loopback
# ---------------------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # silence: the build log is enough
        pass


@contextmanager
def build_server(weights_mirror: Path, torch_wheel: Path) -> Iterator[str]:
    """Serve ``weights/``, ``wheels/`` and ``ca.pem`` on 127.0.0.1; yields the base URL (ends with /).

    The build runs with ``--network=host``, so its steps reach this server as the air-gapped build of
    the real image would reach a mirror on the local network.
    """
    with tempfile.TemporaryDirectory(prefix="denoise-build-serve-") as tmp:
        root = Path(tmp)
        (root / "weights").mkdir()
        for item in weights_mirror.iterdir():
            if item.is_file():
                (root / "weights" / item.name).symlink_to(item)
        (root / "wheels").mkdir()
        (root / "wheels" / torch_wheel.name).symlink_to(torch_wheel)
        if HOST_CA_BUNDLE.is_file():
            shutil.copyfile(HOST_CA_BUNDLE, root / "ca.pem")
        handler = functools.partial(_QuietHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------------------------------------------
# talking to the running image
# ---------------------------------------------------------------------------------------------------


def http_get(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are returned, connection errors raised."""
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for_http(url: str, token: str, timeout: float, container_alive) -> tuple[int, bytes]:
    """Poll ``url`` until it answers at all (any HTTP status); fail early when the container died."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not container_alive():
            raise AssertionError("the container exited before JupyterLab answered")
        try:
            return http_get(url, token)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s ({last})")


def container_state(docker: Docker, name: str) -> dict:
    return json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
