"""How soon `python -m fc_chatglm --demo` answers, measured from the process's start as the app starts it: the port
open (a TCP connect succeeds), the first line printed (the app's "Connected"), the first HTTP answer, the hand-over
to the server proper (its `listening on` line) and the engine ready (`/health` says ready); with the longest wait for
a `/health` answer while it starts. Quiet, then with the CPUs loaded by busy-loop processes; the median of several runs.

    python benchmarks/bench_startup.py [--runs 5] [--busy 2] [--project DIR ...]

--project runs other checkouts' fc_chatglm (e.g. one exported from an earlier commit with
`git archive <commit> fc_chatglm connector.json | tar -x -C DIR`), their runs interleaved, so that a machine whose
load changes meanwhile weighs on each alike."""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


PROJECT = Path(__file__).resolve().parent.parent
EVENTS = ('port open', 'first line', 'first answer', 'hand-over', 'engine ready')


def free_port() -> int:
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def health(port: int) -> dict:
    "`/health` on a new connection, read as raw bytes: cheap for this process, which shares the CPUs with the one measured."
    with socket.create_connection(('127.0.0.1', port), timeout=30) as c:
        c.sendall(f'GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while chunk := c.recv(65536): data += chunk
    return json.loads(data.split(b'\r\n\r\n', 1)[1])


def one_run(project: Path, every: float = 0.1, timeout: float = 180) -> dict[str, float]:
    "Seconds from the start to each event, and the longest /health answer while starting (asked every `every` s)."
    port, at = free_port(), {}
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(project / 'connector.json', Path(d) / 'connector.json')
        env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'PYTHONPATH': str(project) + os.pathsep + os.environ.get('PYTHONPATH', '')}
        t0 = time.monotonic()
        p = subprocess.Popen([sys.executable, '-m', 'fc_chatglm', '--demo', '--port', str(port)], cwd=d, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        def read():
            for line in p.stdout:
                at.setdefault('first line', time.monotonic() - t0)
                if b'listening on' in line: at.setdefault('hand-over', time.monotonic() - t0)
        threading.Thread(target=read, daemon=True).start()
        slowest = 0.0
        try:
            while time.monotonic() - t0 < timeout:
                try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); break
                except OSError: time.sleep(0.005)
            at['port open'] = time.monotonic() - t0
            while time.monotonic() - t0 < timeout:
                asked = time.monotonic()
                try: h = health(port)
                except (OSError, ValueError): time.sleep(0.02); continue
                slowest = max(slowest, time.monotonic() - asked)
                at.setdefault('first answer', time.monotonic() - t0)
                if h['status'] == 'ready': at['engine ready'] = time.monotonic() - t0; break
                time.sleep(every)
        finally:
            p.kill(); p.wait()
    return {**at, 'slowest answer': slowest}


def busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(n)]


def report(name: str, runs: list[dict[str, float]]):
    cols = EVENTS + ('slowest answer',)
    print(f'{name} (median of {len(runs)} runs, seconds from the process start)')
    print('  ' + ' | '.join(f'{c:>14}' for c in cols))
    print('  ' + ' | '.join(f'{statistics.median(r[c] for r in runs if c in r):14.2f}' if any(c in r for r in runs) else f'{"-":>14}'
                            for c in cols))


def interleaved(projects: list[Path], runs: int, name: str):
    "`runs` runs of each project, taking turns; a report for each."
    done = {p: [] for p in projects}
    for _ in range(runs):
        for p in projects: done[p].append(one_run(p))
    for p in projects: report(f'{name}, fc_chatglm from {p}', done[p])


def main():
    a = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    a.add_argument('--runs', type=int, default=5)
    a.add_argument('--busy', type=int, default=2, help='busy-loop processes for the loaded runs')
    a.add_argument('--project', type=Path, nargs='+', default=[PROJECT], help='the checkouts whose fc_chatglm runs')
    args = a.parse_args()
    print(f'{os.cpu_count()} CPUs')
    interleaved(args.project, args.runs, 'quiet')
    loads = busy(args.busy)
    try: interleaved(args.project, args.runs, f'loaded ({args.busy} busy-loop processes)')
    finally:
        for p in loads: p.kill(); p.wait()


if __name__ == '__main__':
    main()
