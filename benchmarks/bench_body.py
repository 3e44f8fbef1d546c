"""The connector's memory when a large body is posted to /chat (issue 15: a 19 MB valid request took the
process from 0.6 to 1.1 GB, and a 50 MB body was read whole). Starts `python -m fc_chatglm --demo` and prints
its resident memory before and at the peak of each request, sampled every 10 ms.

    python benchmarks/bench_body.py [--project PATH]   # PATH: another checkout to measure; about 10 s on a 2-core CPU
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil


def start(project: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', 'PYTHONPATH': str(project)}
    p = subprocess.Popen([sys.executable, '-m', 'fc_chatglm', '--port', '0', '--demo', '--embedding', 'off'], cwd=project,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout:
        if 'listening on ' in line: return p, line.split('listening on ')[1].split()[0]
    raise RuntimeError(f'the connector exited with {p.wait()}')


def post(base: str, path: str, data: bytes, chunked: bool, piece: int = 65536) -> str:
    "POST `data` on a raw socket (chunked, as HttpClient sends it, or with a Content-Length); the reply's first 100 bytes."
    host, port = base.removeprefix('http://').split(':')
    with socket.create_connection((host, int(port)), timeout=600) as s:
        framing = 'Transfer-Encoding: chunked' if chunked else f'Content-Length: {len(data)}'
        s.sendall(f'POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{framing}\r\n'
                  'Connection: close\r\n\r\n'.encode())
        try:
            for i in range(0, len(data), piece):
                part = data[i:i + piece]
                s.sendall(f'{len(part):x}\r\n'.encode() + part + b'\r\n' if chunked else part)
            if chunked: s.sendall(b'0\r\n\r\n')
        except OSError: pass  # refused and closed before the end
        raw = b''
        try:
            while d := s.recv(65536): raw += d
        except OSError: pass
    return raw.partition(b'\r\n\r\n')[2][:100].decode('ascii', 'replace')


def peak_rss(pid: int, work) -> tuple[int, int, object]:
    "RSS before `work()`, its peak while it runs, and its result."
    proc, peak, done = psutil.Process(pid), [0], threading.Event()
    def sample():
        while not done.is_set(): peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.01)
    before = proc.memory_info().rss
    t = threading.Thread(target=sample); t.start()
    try: result = work()
    finally: done.set(); t.join()
    return before, max(peak[0], proc.memory_info().rss), result


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--project', type=Path, default=Path(__file__).resolve().parent.parent)
    a = a.parse_args()
    p, base = start(a.project)
    try:
        while httpx.get(base + '/health').json()['status'] != 'ready': time.sleep(0.1)
        junk = b' ' * 50_000_000
        def valid(entries: int) -> bytes:  # a conversation as the app sends it: every Chinese character \u-escaped
            turns = [{'role': 'user' if i % 2 == 0 else 'assistant', 'content': '长城' * 650} for i in range(entries)]
            return json.dumps({'message': 'hi', 'history': turns, 'settings': {'maxResponseTokens': 1}}).encode()
        cases = [('50 MB, chunked, no Content-Length', junk, True), ('50 MB, with its Content-Length', junk, False)]
        cases += [(f'a valid request of {len(v) / 1e6:.1f} MB ({n:,} history entries), chunked', v, True)
                  for n in (1000, 2400) for v in [valid(n)]]
        print(f'{"request to /chat":<62} {"RSS before":>11} {"peak":>9}  reply')
        for name, data, chunked in cases:
            before, peak, reply = peak_rss(p.pid, lambda: post(base, '/chat', data, chunked))
            print(f'{name:<62} {before / 2**20:>8.0f} MB {peak / 2**20:>6.0f} MB  {reply[:60]}')
    finally:
        p.kill(); p.wait()


if __name__ == '__main__':
    main()
