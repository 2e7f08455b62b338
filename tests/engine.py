"""A real Docker engine for the engine tests and bench/runner_overhead.py, started here and stopped after.

FACTS ("A Docker engine runs here"): Debian's docker.io, started by hand (PID 1 is not systemd) with its state in
a folder of its own; no registry is reachable, so the stage images are built from ``docker/`` ``FROM`` a base
imported from a Debian minbase rootfs (debootstrap, out of Debian's packages). The rootfs tarball is cached in
``var/cache/engine/`` so a second run does not bootstrap again. ``make test`` installs the packages.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "cache" / "engine"
BASE_IMAGE = "npuflow-test/base:bookworm-minbase"
#: What the smoke profiles' Python needs from the OS (the interpreter and the checkout's venv are mounted):
#: the C runtime of paddle and torch, OpenCV's GL and GLib, and the standard library's extension modules.
BASE_PACKAGES = ("libgomp1,libgl1,libglib2.0-0,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,libncursesw6,"
                 "libreadline8,libuuid1,zlib1g")
MIRROR = "http://deb.debian.org/debian"
#: The images the smoke profiles' container blocks name, each built from its Dockerfile in docker/.
STAGE_IMAGES = {"npuflow/paddle-npu:smoke": "docker/paddle-npu.Dockerfile",
                "npuflow/pytorch-npu:smoke": "docker/pytorch-npu.Dockerfile"}
#: Build args that keep a build offline: the toolkit checkouts are mounted at run time, nothing is fetched.
OFFLINE_ARGS = {"PADDLE_PACKAGES": "", "PADDLEDETECTION_REF": "", "PADDLESEG_REF": "", "MODELZOO_REF": "",
                "TORCH_PACKAGES": "", "PIP_PACKAGES": ""}


class EngineUnavailable(RuntimeError):
    """dockerd or debootstrap is not installed (``make test`` installs them) or the engine did not start."""


@dataclass
class Engine:
    host: str  # DOCKER_HOST
    root: Path
    pid: int

    def client(self) -> Any:  # a docker.DockerClient (the SDK is imported lazily)
        import docker

        return docker.DockerClient(base_url=self.host, timeout=120)

    def build(self, dockerfile: str, tag: str, base: str = BASE_IMAGE) -> str:
        """Build ``dockerfile`` from the repository root with the legacy builder, offline; returns the image id."""
        image, _ = self.client().images.build(path=str(ROOT), dockerfile=dockerfile, tag=tag, rm=True,
                                              network_mode="none", buildargs={"BASE_IMAGE": base, **OFFLINE_ARGS})
        return image.id


def _rootfs_tarball() -> Path:
    tarball = CACHE / "bookworm-minbase.tar"
    if tarball.is_file():
        return tarball
    if not shutil.which("debootstrap"):
        raise EngineUnavailable("debootstrap is not installed (make test installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
                        MIRROR], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        partial = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def _start_dockerd(root: Path) -> subprocess.Popen[bytes]:
    if not shutil.which("dockerd"):
        raise EngineUnavailable("dockerd is not installed (make test installs Debian's docker.io)")
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - the daemon's stdout for its whole life
    return subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "docker.pid"), "--host", f"unix://{root}/docker.sock",
         "--storage-driver=overlay2", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
         "--bridge=none", "--exec-opt", "native.cgroupdriver=cgroupfs"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


@contextlib.contextmanager
def running_engine(images: dict[str, str] | None = None) -> Iterator[Engine]:
    """dockerd in a private folder, the base imported and ``images`` (tag -> Dockerfile) built; all stopped and
    removed afterwards."""
    import docker

    # A short path: the socket's path must stay under the kernel's 108-byte limit.
    root = Path(tempfile.mkdtemp(prefix="npuflow-engine-", dir="/tmp"))
    daemon = _start_dockerd(root)
    engine = Engine(host=f"unix://{root}/docker.sock", root=root, pid=daemon.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                engine.client().ping()
                break
            except docker.errors.DockerException:
                if daemon.poll() is not None or time.monotonic() > deadline:
                    tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                    raise EngineUnavailable(f"dockerd did not start:\n{tail}") from None
                time.sleep(0.2)
        repository, tag = BASE_IMAGE.split(":")
        with open(_rootfs_tarball(), "rb") as fh:  # `docker import`, streamed
            engine.client().api.import_image_from_data(fh, repository=repository, tag=tag)
        for tag, dockerfile in (images or {}).items():
            engine.build(dockerfile, tag)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            cli = engine.client()
            for container in cli.containers.list(all=True):
                container.remove(force=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        # What dockerd leaves mounted on exit (its default network namespace, overlay layers of a crash).
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(root) + "/"):
                subprocess.run(["umount", "-l", target], check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
