"""Run a stage's command in a container (the tutorials' images) through the docker SDK, as a host process runs.

The task does not talk to the engine itself: it starts ``python -m npuflow.container <spec.json>`` in place of
the command, under the same runner as a host command (own process group, PDEATHSIG, the task following
``stage.log``). This supervisor creates the container, whose command appends its output to that same
``stage.log`` (mounted), and exits with the container's exit status. On SIGTERM (``on_kill``, a timeout, the
task process dying) it stops the container (SIGTERM, then SIGKILL after the grace) and removes it. So
preflight, resume, failing-rank naming and metrics see what they see for a host process: the same argv, env
and cwd, paths bind-mounted where they are on the host, ranks carrying the ``NPUFLOW_JOB`` marker (visible in
the host's /proc). Every container is labelled ``npuflow.job=<job>``, which finds what an earlier try left.

Plan time (:func:`container_for`) imports nothing but the standard library; the ``docker`` package is needed
only where a stage really runs in a container.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from npuflow.recipe import PROJECT_ROOT
from npuflow.rundir import write_json

#: Label every stage container carries: the stage's job marker (``<dag>/<run>/<stage>/node<rank>``).
JOB_LABEL = "npuflow.job"

#: What every Ascend container needs besides its cards (the driver's management nodes and tools).
ASCEND_DEVICES = ("/dev/davinci_manager", "/dev/devmm_svm", "/dev/hisi_hdc")
ASCEND_MOUNTS = ("/usr/local/Ascend/driver", "/usr/local/bin/npu-smi", "/usr/local/dcmi")

DEFAULT_SHM_GIB = 16.0


class ContainerError(RuntimeError):
    """The engine refused the container (no such image, no engine): not something a retry fixes."""


def container_name(job: str) -> str:
    """A container name docker accepts, unique per stage job; the label holds the exact marker."""
    return "npuflow-" + re.sub(r"[^a-zA-Z0-9_.-]+", "-", job).strip("-.")[:200]


def container_for(cfg: dict[str, Any], *, device: dict[str, Any], holds_cards: bool, paths: list[str],
                  render: Any, one_card: bool = False) -> dict[str, Any]:
    """The container of one stage: image, user, mounts, devices, shared memory; ``npuflow plan`` shows it.

    ``paths`` are the folders the stage works in (run dir, dataset root, toolkit checkout, cwd): each is
    bind-mounted at its own path, so argv, outputs and resume globs mean the same inside and out; so is this
    checkout, read-only, for the project's programs. A stage that
    holds cards gets ``/dev/davinci<N>`` for each card of the layout, the Ascend management nodes, the driver
    mounts and ``ASCEND_VISIBLE_DEVICES``; a ``one_card`` stage (an inference, an evaluation) the same for the
    layout's first card, the one its pool slot claimed.
    """
    mounts: list[dict[str, Any]] = []
    wanted = [(p, False) for p in paths]
    for entry in cfg.get("mounts", []):
        path = render(entry, "container.mounts")
        wanted.append((path.removesuffix(":ro"), path.endswith(":ro")))
    # The project's stage programs, read-only: the container runs the orchestrator's own version of them.
    wanted.append((str(PROJECT_ROOT), True))
    for path, read_only in wanted:  # first mention wins; a folder inside another is kept only to change its mode
        path = os.path.normpath(path)
        if any(path == m["source"] for m in mounts):
            continue
        inside = [m for m in mounts if path.startswith(m["source"].rstrip("/") + "/")]
        if inside and max(inside, key=lambda m: len(m["source"]))["read_only"] == read_only:
            continue
        mounts.append({"source": path, "target": path, "read_only": read_only})
    mounts.sort(key=lambda m: m["source"])  # parents before the folders inside them (the engine sorts alike)
    devices = [render(d, "container.devices") for d in cfg.get("devices", [])]
    env: dict[str, str] = {}
    if (holds_cards or one_card) and device["kind"] == "npu":
        cards = device["ids"] if holds_cards else device["ids"][:1]  # a one-card stage gets the card it claimed
        devices += [f"/dev/davinci{i}:/dev/davinci{i}" for i in cards]
        devices += [f"{d}:{d}" for d in ASCEND_DEVICES]
        mounts += [{"source": m, "target": m, "read_only": True} for m in ASCEND_MOUNTS]
        env["ASCEND_VISIBLE_DEVICES"] = ",".join(map(str, cards))
    root = bool(cfg.get("root"))
    return {
        "image": cfg["image"],
        "user": None if root else f"{os.getuid()}:{os.getgid()}",
        # The invoking user's groups (HwHiAiUser owns the Ascend device nodes), which a uid:gid user lacks.
        "group_add": [] if root else sorted(set(os.getgroups()) - {os.getgid()}),
        "mounts": mounts,
        "devices": [d if d.count(":") == 2 else f"{d}:rwm" for d in devices],
        "env": env,
        "network_mode": "host",  # HCCL and the rendezvous talk to the other nodes on the host's addresses
        "ipc_mode": "host",
        "shm_gib": float(cfg.get("shm_gib", DEFAULT_SHM_GIB)),
    }


def describe(spec: dict[str, Any]) -> str:
    """One line for the task log."""
    mounts = ", ".join(m["source"] + (":ro" if m["read_only"] else "") for m in spec["mounts"])
    return (f"container: image {spec['image']}, user {spec['user'] or 'root'}, "
            f"devices [{', '.join(spec['devices'])}], mounts [{mounts}], shm {spec['shm_gib']:g} GiB")


# --- the engine -------------------------------------------------------------------------------------------

def client() -> Any:
    """A docker client from the environment (``DOCKER_HOST``); raises ContainerError when there is no engine."""
    import docker

    try:
        cli = docker.from_env(timeout=60)
        cli.ping()
    except Exception as exc:  # docker.errors.DockerException and the transport's errors
        raise ContainerError(f"no Docker engine answers at {os.environ.get('DOCKER_HOST') or 'the default socket'}: "
                             f"{exc}") from None
    return cli


def job_containers(cli: Any, job: str) -> list[Any]:
    """Every container (running or not) of ``job``."""
    return cli.containers.list(all=True, filters={"label": f"{JOB_LABEL}={job}"})


def remove_job_containers(job: str, grace_s: float = 10.0, cli: Any = None) -> list[str]:
    """Stop and remove what ``job`` left (an earlier try, a supervisor that was SIGKILLed). Returns their names."""
    cli = cli or client()
    names = []
    for found in job_containers(cli, job):
        names.append(found.name)
        _stop(found, grace_s)
    return names


def _stop(container: Any, grace_s: float) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.reload()
        if container.status == "running":
            container.kill(signal="SIGTERM")
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                container.reload()
                if container.status != "running":
                    break
                time.sleep(0.1)
            else:
                container.kill()
    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)


#: In the stage folder: the image the stage's container ran (name, content id, registry digests).
IMAGE_RECORD = "container_image.json"

#: The container's command: the stage's argv with its stdout and stderr appended to stage.log (bind-mounted at
#: its own path) by the container itself, as a host child writes it. Neither the engine's log driver nor an
#: attached client sits between the toolkit and its log, so it never waits for them (bench/log_streaming.py).
#: A constant script: the log path and argv are its positional parameters, never part of the script.
LOG_SCRIPT = 'exec "$@" >>"$0" 2>&1'


def _create(cli: Any, spec: dict[str, Any]) -> Any:
    import docker
    from docker.types import LogConfig, Mount

    env = dict(spec["env"])
    env.update({name: os.environ[name] for name in spec.get("pass_env", []) if name in os.environ})
    if spec["user"] and "HOME" not in env:
        env["HOME"] = spec["home"]  # the invoking user has no home in the image; toolkits write caches there
    try:
        return cli.containers.create(
            spec["image"], command=["/bin/sh", "-c", LOG_SCRIPT, spec["log_path"], *spec["argv"]],
            log_config=LogConfig(type=LogConfig.types.NONE), name=container_name(spec["job"]), labels={JOB_LABEL: spec["job"]},
            environment=env, working_dir=spec["cwd"], user=spec["user"] or "0:0",
            group_add=[str(g) for g in spec.get("group_add", [])] or None,
            mounts=[Mount(m["target"], m["source"], type="bind", read_only=m["read_only"]) for m in spec["mounts"]],
            devices=spec["devices"], network_mode=spec["network_mode"], ipc_mode=spec["ipc_mode"],
            shm_size=int(spec["shm_gib"] * 2**30), init=True, stdin_open=False, tty=False,
        )
    except docker.errors.ImageNotFound:
        raise ContainerError(f"image {spec['image']!r} is not on this host's engine; build it from docker/ "
                             f"(see README, 'Containers')") from None
    except docker.errors.APIError as exc:
        raise ContainerError(f"the engine refused the container: {exc.explanation or exc}") from None


def supervise(spec: dict[str, Any]) -> int:
    """Run the container of ``spec`` to its end; returns its exit status.

    SIGTERM or SIGINT stops the container (``stop_grace_s``) and removes it; the status is then 128 + signal.
    """
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    cli = client()
    left = remove_job_containers(spec["job"], cli=cli)
    if left:
        print(f"[npuflow] removed container(s) an earlier try left: {', '.join(left)}", file=sys.stderr, flush=True)
    container = _create(cli, spec)
    _record_image(cli, container, spec)
    try:
        container.start()
        while not stop.is_set():
            try:
                status = container.wait(timeout=0.5)
            except Exception:  # requests' ReadTimeout/ConnectionError: still running
                continue
            return int(status.get("StatusCode", 1))
        print(f"[npuflow] {signal.Signals(received[0]).name}: stopping container {container.name}",
              file=sys.stderr, flush=True)
        _stop(container, float(spec.get("stop_grace_s", 6.0)))  # within the job guard's 9 s (npuflow.proc)
        return 128 + received[0]
    finally:
        _stop(container, 0.0)


def _record_image(cli: Any, container: Any, spec: dict[str, Any]) -> None:
    """The image this container really runs, by content (a tag can move between runs): for the provenance."""
    image_id = container.attrs.get("Image")
    try:
        digests = cli.images.get(image_id).attrs.get("RepoDigests") or []
    except Exception:  # the record is provenance only: never fail the stage for it
        digests = []
    write_json(Path(spec["home"]) / IMAGE_RECORD, {"image": spec["image"], "image_id": image_id,
                                                   "repo_digests": digests})


def image_record(stage_dir: str) -> dict[str, Any] | None:
    """What ``_record_image`` wrote for the stage's container, or None (no container started)."""
    try:
        return json.loads((Path(stage_dir) / IMAGE_RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_spec(path: Path, spec: dict[str, Any]) -> None:
    path.write_text(json.dumps(spec, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m npuflow.container SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    try:
        return supervise(spec)
    except ContainerError as exc:
        from npuflow.errors import refuse

        return refuse(str(exc))


if __name__ == "__main__":
    sys.exit(main())
