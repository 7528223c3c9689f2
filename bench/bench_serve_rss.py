"""Idle memory of ``fastagent serve``: resident set once ``/readyz`` answers.

Starts ``fastagent serve --no-auth`` on loopback (a fresh SQLite store, the
tree on PYTHONPATH), waits until ``/readyz`` says ready, reads ``VmRSS`` from
``/proc/PID/status`` (and ``VmHWM``, the peak so far), stops it; ``--runs`` times,
and prints each figure and the median.

Run: PYTHONPATH=$PWD python bench/bench_serve_rss.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from statistics import median


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def one_run(tmp: Path) -> tuple[float, float, float]:
    """(RSS MB, peak RSS MB, seconds to ready) of one ``serve``."""
    port = free_port()
    env = dict(os.environ, OPENAI_API_KEY="rss-bench")
    env.pop("FASTAGENT_VAIC_TOKEN", None)
    cmd = [sys.executable, "-c", "from fastagent.cli import main; main()", "serve"]
    cmd += ["--no-auth", "--port", str(port), "--store", str(tmp / f"rss-{port}.db")]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > 60:
                raise SystemExit("serve not ready within 60 s")
            time.sleep(0.05)
        ready = time.monotonic() - t0
        time.sleep(0.5)  # settle
        return status_kb(proc.pid, "VmRSS") / 1024, status_kb(proc.pid, "VmHWM") / 1024, ready
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    import fastagent

    print(f"tree: {Path(fastagent.__file__).parent.parent}")
    rss, peak, ready = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-rss-") as tmp:
        for _ in range(args.runs):
            r, p, t = one_run(Path(tmp))
            rss.append(r)
            peak.append(p)
            ready.append(t)
            print(f"  VmRSS {r:6.1f} MB  VmHWM {p:6.1f} MB  ready in {t:.2f} s")
    print(
        f"median: VmRSS {median(rss):.1f} MB, VmHWM {median(peak):.1f} MB, "
        f"ready in {median(ready):.2f} s"
    )


if __name__ == "__main__":
    main()
