"""The dataset stage: make the spec's dataset available at ``--root`` as the profile's source says.

- ``local``: the dataset is on disk already (a ``dataset_root`` the user passed); nothing is written there, and a
  missing folder fails here, in seconds, instead of an hour into training.
- ``download``: fetch the spec's archives (and its base spec's) with resume, retries and MD5 checks into
  ``<root>/.downloads``, extract them safely, then run the spec's derivation steps. Verified downloads and
  finished extractions leave markers, so a rerun of a complete dataset takes seconds.
- ``synthetic``: generate a tiny set in the format the archives would hold, then run the same derivation steps.

Login credentials (Cityscapes) come from the environment (``NPUFLOW_DATASET_USER`` / ``NPUFLOW_DATASET_PASSWORD``),
set by the Airflow operator from the spec's Connection; they are never in argv or in a log.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from npuflow.datasets.archive import extract, extracted_marker
from npuflow.datasets.derive import STEPS
from npuflow.datasets.download import Archive, DownloadError, check_free_space, download, form_login
from npuflow.datasets.synth import GENERATORS
from npuflow.errors import refuse
from npuflow.recipe import load_dataset_spec

USER_ENV, PASSWORD_ENV = "NPUFLOW_DATASET_USER", "NPUFLOW_DATASET_PASSWORD"


class PrepareError(RuntimeError):
    """The dataset could not be made available; the message says what to do."""


def _chain(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's base (if any) first, then the spec: the order in which they are prepared."""
    return ([load_dataset_spec(spec["base"])] if spec.get("base") else []) + [spec]


def _splits(spec: dict[str, Any]) -> list[str]:
    return list(spec["splits"].values())


def _login(spec: dict[str, Any]) -> Any:
    login = spec["download"].get("login")
    if not login:
        return None
    user, password = os.environ.get(USER_ENV), os.environ.get(PASSWORD_ENV)
    if not user or not password:
        raise PrepareError(f"{spec['name']}: the download needs a login; create the Airflow Connection "
                           f"{login['connection']!r} with the site's user name and password")
    return form_login(login["url"], user, password)


def _download(spec: dict[str, Any], root: Path, downloads: Path, log: Any) -> list[dict[str, Any]]:
    done = []
    archives = [Archive.from_spec(a) for a in spec["download"]["archives"]]
    # Disk for what is still to fetch plus, roughly, as much again to extract it.
    missing = [a for a in archives if not extracted_marker(root, downloads / a.name).exists()]
    check_free_space(root, 2 * sum(a.size or 0 for a in missing), f"the {spec['name']} archives")
    session = _login(spec) if missing else None
    for archive in archives:
        path = downloads / archive.name
        if extracted_marker(root, path).exists() and not path.exists():
            log(f"{archive.name}: extracted earlier and the archive was removed; skipping")
            continue
        fetched = download(archive, path, session=session, log=log)
        extracted = extract(path, root, log=log)
        done.append({**fetched, "extracted": extracted["entries"]})
    return done


def prepare(spec_name: str, root: Path, source: dict[str, Any], log: Any = print) -> dict[str, Any]:
    started = time.time()
    spec = load_dataset_spec(spec_name)
    result: dict[str, Any] = {"spec": spec_name, "format": spec["format"], "source": source["kind"],
                              "root": str(root)}
    if source["kind"] == "local":
        if not root.is_dir():
            raise PrepareError(f"dataset root {root} does not exist: put the {spec['title']} there, "
                               f"or pass dataset_root=<folder> pointing at it")
        return {**result, "generated": False, "downloaded": []}
    chain = _chain(spec)
    if source["kind"] == "synthetic":
        raw = chain[0]
        # Generate next to the target and move into place: a half-written set never looks finished.
        tmp = root.with_name(f".{root.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        GENERATORS[raw["format"]](tmp, source["images"], tuple(source["image_size"]), seed=source.get("seed", 0),
                                  categories=source.get("categories", 3))
        for step_spec in chain:
            for step in step_spec.get("derive", []):
                STEPS[step](tmp, _splits(step_spec), log=log, home=root)
        if root.exists():
            shutil.rmtree(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(root)
        return {**result, "generated": True, "images": source["images"],
                "seconds": round(time.time() - started, 3)}
    downloaded = []
    for step_spec in chain:
        if "download" in step_spec:
            downloaded += _download(step_spec, root, root / ".downloads", log)
        for step in step_spec.get("derive", []):
            STEPS[step](root, _splits(step_spec), log=log)
    return {**result, "generated": False, "downloaded": downloaded, "seconds": round(time.time() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="dataset spec name (recipes/datasets/<spec>.yaml)")
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--source", required=True, help="the profile's dataset_source, as JSON")
    p.add_argument("--out", required=True, type=Path, help="result JSON")
    args = p.parse_args(argv)
    try:
        result = prepare(args.spec, args.root, json.loads(args.source))
    except DownloadError as exc:  # the server or the connection: a later try may get through
        print(f"error: dataset not prepared: {exc}", file=sys.stderr)
        return 1
    except (PrepareError, ValueError) as exc:
        return refuse(f"dataset not prepared: {exc}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dataset ready at {args.root}: {json.dumps(result)[:2000]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
