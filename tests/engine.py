"""A real Docker engine for the engine tests and bench/runner_overhead.py, started here and stopped after.

FACTS ("A Docker engine runs here"): Debian's docker.io, started by hand (PID 1 is not systemd) with its state in
a folder of its own; no registry is reachable, so the stage images are built from ``docker/`` ``FROM`` a base
imported from a Debian minbase rootfs (debootstrap, out of Debian's packages). The rootfs tarball is cached in
``var/cache/engine/`` (zstd) so a second run does not bootstrap again. ``make test`` installs the packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
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
#: The tutorials' torch 2.1 stage images run Python 3.8/3.9 (the vendor's ascend-pytorch 2.1.0 image): a base of
#: Debian bullseye's python3 (3.9) with the torch 2.1.0 wheel (PyPI's is a CUDA build, which runs on the CPU) and
#: the stage programs' packages at the newest releases that still support 3.9. Installed into the rootfs with its
#: own pip through chroot (a build is offline), cached like the minbase.
PY39_BASE = "npuflow-test/base:bullseye-py39-torch21"
#: g++ and the Python headers: the SSD port's mmcv 1.2.7 is compiled with its ops in the base (the vendor's image
#: has a compiler: CANN's operator builds need one).
PY39_SYSTEM = "python3,python3-pip,python3-dev,g++,ca-certificates,libgomp1,libgl1,libglib2.0-0"
DOCKERFILE = ROOT / "docker/pytorch-npu.Dockerfile"


def dockerfile_arg(name: str, dockerfile: Path = DOCKERFILE) -> str:
    """An ``ARG``'s default as the Dockerfile has it (quotes removed)."""
    return re.search(rf"^ARG {name}=(\"[^\"]*\"|\S+)", dockerfile.read_text(), re.M)[1].strip('"')


#: The Dockerfile's YOLOR_PACKAGES (the port's imports) are read from it, so the base carries what the image would.
PY39_PACKAGES = ("torch==2.1.0", "torchvision==0.16.0", "numpy<2", "onnx==1.19.1", "onnxruntime==1.19.2",
                 "faster-coco-eval==1.7.2", "pycocotools", "PyYAML", "jsonschema", "psutil", "Pillow",
                 *dockerfile_arg("YOLOR_PACKAGES").split())
MMCV_VERSION = dockerfile_arg("MMCV_VERSION")
#: The SSD port in the ModelZoo checkout; the Dockerfile's mmcv step reads it at /opt/ModelZoo-PyTorch (its
#: mmcv_need/ files and requirements/runtime.txt).
SSD_PORT = Path("PyTorch/contrib/cv/detection/SSD")


def dockerfile_step(after: str, dockerfile: Path = DOCKERFILE) -> str:
    """The shell of the first ``RUN`` after the line starting with ``after``, as the Dockerfile has it."""
    lines = dockerfile.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("RUN "))
    step = [lines[first].removeprefix("RUN ")]
    while step[-1].endswith("\\"):
        step.append(lines[first + len(step)])
    return "\n".join(step)


#: The Dockerfile's own step that builds mmcv-full with its ops and the port's mmcv_need/ (the port's README).
MMCV_STEP = dockerfile_step("ARG MMCV_JOBS")
#: The images the smoke profiles' container blocks name, each built from its Dockerfile in docker/.
STAGE_IMAGES = {"npuflow/paddle-npu:smoke": "docker/paddle-npu.Dockerfile",
                "npuflow/pytorch-npu:smoke": "docker/pytorch-npu.Dockerfile"}
#: Build args that keep a build offline: the toolkit checkouts are mounted at run time, nothing is fetched.
OFFLINE_ARGS = {"PADDLE_PACKAGES": "", "PADDLEDETECTION_REF": "", "PADDLESEG_REF": "", "MODELZOO_REF": "",
                "TORCH_PACKAGES": "", "PIP_PACKAGES": "", "YOLOR_PACKAGES": ""}


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

    def import_base(self, tag: str, tarball: Path) -> None:
        """`docker import` of a zstd tarball, decompressed into the request (this dockerd reads no zstd)."""
        repository, name = tag.split(":")
        with subprocess.Popen(["zstd", "-dcq", str(tarball)], stdout=subprocess.PIPE) as unzstd:
            assert unzstd.stdout is not None
            self.client().api.import_image_from_data(unzstd.stdout, repository=repository, tag=name)
        if unzstd.returncode:
            raise EngineUnavailable(f"zstd could not read {tarball} (exit {unzstd.returncode})")

    def build(self, dockerfile: str, tag: str, base: str = BASE_IMAGE) -> str:
        """Build ``dockerfile`` from the repository root with the legacy builder, offline; returns the image id."""
        image, _ = self.client().images.build(path=str(ROOT), dockerfile=dockerfile, tag=tag, rm=True,
                                              network_mode="none", buildargs={"BASE_IMAGE": base, **OFFLINE_ARGS})
        return image.id


def _debootstrap(suite: str, packages: str, tarball: Path, then: Any = None) -> Path:
    """A ``--variant=minbase`` rootfs of ``suite`` with ``packages``, ``then(rootfs)`` run on it, as a zstd
    tarball; the rootfs is removed once packed, so the disk holds one copy at a time (plus the engine's)."""
    if tarball.is_file():
        return tarball
    for tool in ("debootstrap", "zstd"):
        if not shutil.which(tool):
            raise EngineUnavailable(f"{tool} is not installed (make test installs it)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={packages}", suite, str(rootfs), MIRROR],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if then is not None:
            then(rootfs)
        partial = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "-C", str(rootfs), "-I", "zstd -T0 -3 -q", "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def _rootfs_tarball() -> Path:
    return _debootstrap("bookworm", BASE_PACKAGES, CACHE / "bookworm-minbase.tar.zst")


def _pip_install_in(rootfs: Path) -> None:
    """The rootfs's own pip installs PY39_PACKAGES through chroot, with this host's DNS and CA bundle (the
    registry is reached through it); nothing of the host's Python goes in."""
    shutil.copy("/etc/resolv.conf", rootfs / "etc" / "resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "tmp" / "host-ca.crt")
    env = {"PATH": "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    subprocess.run(["chroot", str(rootfs), "python3", "-m", "pip", "install", "--no-cache-dir", "--quiet",
                    "--cert", "/tmp/host-ca.crt", *PY39_PACKAGES], check=True, env=env)
    _build_mmcv_in(rootfs, env)
    (rootfs / "tmp" / "host-ca.crt").unlink()
    _drop_what_a_cpu_never_loads(rootfs)


def _build_mmcv_in(rootfs: Path, env: dict[str, str]) -> None:
    """The Dockerfile's mmcv step, run by the rootfs's shell with the pinned SSD port where the image clones it;
    the port's files are removed after (the tests mount the checkout)."""
    from npuflow.toolkits.checkout import checkout_dir

    port = rootfs / "opt" / "ModelZoo-PyTorch" / SSD_PORT
    shutil.copytree(checkout_dir("ModelZoo-PyTorch", "master") / SSD_PORT, port)
    try:
        subprocess.run(["chroot", str(rootfs), "sh", "-eu", "-c", MMCV_STEP], check=True,
                       env={**env, "MODELZOO_REF": "master", "MMCV_VERSION": MMCV_VERSION,
                            "MMCV_JOBS": str(os.cpu_count() or 2), "PIP_CERT": "/tmp/host-ca.crt"})
    finally:
        shutil.rmtree(rootfs / "opt" / "ModelZoo-PyTorch")


#: Of PyPI's torch 2.1.0 (a CUDA build) what a CPU never loads: cuDNN's kernel libraries, which its small
#: ``libcudnn.so.8`` opens only when a cuDNN call runs, and triton (torch imports it only for torch.compile).
#: 1.5 of the base's 5.9 GB; the vendor's CPU-side torch has neither. The libraries torch links (cudart, cuBLAS,
#: NCCL, ...) stay: ``import torch`` loads them on a CPU too.
CPU_NEVER_LOADS = ("nvidia/cudnn/lib/libcudnn_*_infer.so.8", "nvidia/cudnn/lib/libcudnn_*_train.so.8", "triton")


def _drop_what_a_cpu_never_loads(rootfs: Path) -> None:
    site = rootfs / "usr" / "local" / "lib" / "python3.9" / "dist-packages"
    for pattern in CPU_NEVER_LOADS:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def py39_tarball() -> Path:
    """Cached under a digest of what goes in: a changed package list builds a new base instead of reusing one."""
    key = hashlib.sha256(" ".join((PY39_SYSTEM, *PY39_PACKAGES, *CPU_NEVER_LOADS, MMCV_VERSION, MMCV_STEP)).encode()
                         ).hexdigest()[:12]
    return _debootstrap("bullseye", PY39_SYSTEM, CACHE / f"bullseye-py39-torch21-{key}.tar.zst", _pip_install_in)


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
def running_engine(images: dict[str, str | tuple[str, str]] | None = None,
                   bases: dict[str, Path] | None = None) -> Iterator[Engine]:
    """dockerd in a private folder, the bookworm base and ``bases`` (tag -> rootfs tarball) imported and
    ``images`` (tag -> Dockerfile, or (Dockerfile, base tag)) built; all stopped and removed afterwards."""
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
        for base, tarball in {BASE_IMAGE: _rootfs_tarball(), **(bases or {})}.items():
            engine.import_base(base, tarball)
        for tag, spec in (images or {}).items():
            dockerfile, base = (spec, BASE_IMAGE) if isinstance(spec, str) else spec
            engine.build(dockerfile, tag, base)
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
