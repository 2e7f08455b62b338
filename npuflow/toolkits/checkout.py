"""The set-up step that puts each toolkit's checkout, at its pinned ref and commit, where the plans find it.

``{toolkit_checkout}`` (a builtin variable of every plan) is ``<checkouts root>/<name>@<ref>``; the root is
``$NPUFLOW_TOOLKITS_DIR`` or ``var/toolkits`` in this project. :func:`sync` fills it: with a link to the
tutorials' checkout in ``shared/upstream/<folder>`` when that exists (this machine reaches no git host), else a
clone of the ref checked out at the pinned commit. A user points a run at a checkout of their own with the
``toolkit_dir`` parameter instead. Runs ``git`` as an argv list; nothing here imports Airflow or a framework.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from npuflow.recipe import PROJECT_ROOT
from npuflow.toolkits import Toolkit


def checkouts_root() -> Path:
    return Path(os.environ.get("NPUFLOW_TOOLKITS_DIR", PROJECT_ROOT / "var" / "toolkits"))


def upstream_root() -> Path:
    """The tutorials' checkouts beside the project (``../shared/upstream``), or ``$NPUFLOW_UPSTREAM``."""
    return Path(os.environ.get("NPUFLOW_UPSTREAM", PROJECT_ROOT.parent / "shared" / "upstream"))


def checkout_dir(name: str, ref: str) -> Path:
    return checkouts_root() / f"{name}@{ref}"


@dataclass
class Synced:
    toolkit: str
    ref: str
    commit: str
    path: Path
    source: str  # "upstream <folder>", "clone <repository>" or "present"


def sync(tk: Toolkit, ref: str, *, clone: bool = True) -> Synced:
    """Make ``checkout_dir(tk.name, ref)`` hold the toolkit at ``ref``'s pinned commit; idempotent."""
    commit = tk.commit(ref)
    dest = checkout_dir(tk.name, ref)
    if dest.exists():
        return Synced(tk.name, ref, commit, dest, "present")
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = upstream_root() / tk.upstream if tk.upstream else None
    if local is not None and local.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(local.resolve(), target_is_directory=True)
        tmp.replace(dest)
        return Synced(tk.name, ref, commit, dest, f"upstream {local}")
    if not clone:
        raise FileNotFoundError(f"{tk.name}@{ref}: no checkout at {dest} and none in {upstream_root()}")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        subprocess.run(["git", "clone", "--quiet", "--branch", ref, "--single-branch", tk.repository, str(tmp)],
                       check=True)
        subprocess.run(["git", "-C", str(tmp), "checkout", "--quiet", "--detach", commit], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"{tk.name}@{ref}: cloning {tk.repository} at {commit} failed: {exc}") from None
    tmp.rename(dest)
    return Synced(tk.name, ref, commit, dest, f"clone {tk.repository}")


def describe(name: str, ref: str, path: str) -> dict[str, object]:
    """What a run's toolkit checkout is, for its provenance: the pinned commit of the ref, and of ``path`` the
    commit checked out and whether it has local changes (a git checkout), or only that it is a plain tree (the
    tutorials' copies in shared/upstream are not git repositories), or that this host does not have it (a
    production path inside the stage image)."""
    from npuflow.toolkits import toolkit

    out: dict[str, object] = {"name": name, "ref": ref, "path": path}
    try:
        out["pinned_commit"] = toolkit(name).commit(ref)
    except (KeyError, ValueError):
        out["pinned_commit"] = None
    where = Path(path)
    if not where.is_dir():
        return {**out, "checkout": "not on this host"}
    git = ["git", "-C", str(where)]
    top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != where.resolve():  # not its own repository
        return {**out, "checkout": f"a tree, not a git checkout ({where.resolve()})"}
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    changes = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    commit = head.stdout.strip()
    return {**out, "checkout": "git", "commit": commit, "local_changes": bool(changes.stdout.strip()),
            "at_pinned_commit": commit == out["pinned_commit"]}
