"""Download throughput of the prepare stage's downloader against curl, same file, same local HTTP server.

    .venv/bin/python bench/download.py [--mib 1024] [--repeat 3] [--link-mib-s 200]

Serves a random file from tests/fileserver.py on 127.0.0.1 and fetches it alternately with
``curl -s -o`` and with ``npuflow.datasets.download.download`` (which also computes and checks the MD5 while
streaming and writes the verified marker; curl does neither). Prints MiB/s of each (median) and the ratio;
the goal is >= 0.9. Unthrottled on loopback the downloader is bound by MD5 (~700 MiB/s on one core) and, on a
2-core machine, by sharing the cores with the server; ``--link-mib-s`` shows the ratio at a network's rate.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.datasets.download import Archive, download, marker_path  # noqa: E402

# The server runs in its own process, as curl does: in this process it would compete for the GIL with the
# downloader being measured.
SERVER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from tests.fileserver import FileServer\n"
    "with FileServer(Path(sys.argv[1])) as s:\n"
    "    s.rate_limit = float(sys.argv[2]) * 2**20 or None\n"
    "    print(s.url, flush=True)\n"
    "    sys.stdin.read()\n"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--link-mib-s", type=float, default=0,
                   help="throttle the server to this rate, standing in for a real network link (0: loopback speed)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        www = Path(tmp) / "www"
        www.mkdir()
        digest = hashlib.md5()
        with open(www / "blob.bin", "wb") as fh:
            for _ in range(args.mib):
                chunk = os.urandom(1 << 20)
                digest.update(chunk)
                fh.write(chunk)
        size = args.mib << 20
        rates: dict[str, list[float]] = {"curl": [], "npuflow": []}
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(www), str(args.link_mib_s)], cwd=ROOT, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            url = server.stdout.readline().strip()
            archive = Archive(name="blob.bin", url=f"{url}/blob.bin", size=size, md5=digest.hexdigest())
            dest = Path(tmp) / "out.bin"
            for _ in range(args.repeat):
                dest.unlink(missing_ok=True)
                started = time.perf_counter()
                subprocess.run(["curl", "-s", "-f", "-o", str(dest), archive.url], check=True)
                rates["curl"].append(size / (time.perf_counter() - started) / 2**20)
                dest.unlink()
                marker_path(dest).unlink(missing_ok=True)
                started = time.perf_counter()
                download(archive, dest, log=lambda _: None)
                rates["npuflow"].append(size / (time.perf_counter() - started) / 2**20)
        finally:
            server.stdin.close()
            server.wait(10)
    curl, ours = statistics.median(rates["curl"]), statistics.median(rates["npuflow"])
    link = f"server throttled to {args.link_mib_s:g} MiB/s" if args.link_mib_s else "loopback, unthrottled"
    print(f"file {args.mib} MiB, {link}, median of {args.repeat}")
    print(f"curl      {curl:8.0f} MiB/s")
    print(f"npuflow   {ours:8.0f} MiB/s  (MD5 verified while streaming, marker written)")
    print(f"ratio npuflow/curl {ours / curl:.2f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
