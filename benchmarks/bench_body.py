"""The connector's memory when a large body is posted to /chat: 50 MB past the byte limit (chunked, and with its
Content-Length) and valid requests of several MB. Starts `python -m fc_chatglm --demo` and prints its resident memory
before and at the peak of each request, sampled every 10 ms (`peak_during` in `fc_chatglm.testing`).

    python benchmarks/bench_body.py [--project PATH]   # PATH: another checkout to measure; about 10 s on a 2-core CPU
"""
import argparse
import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.testing import peak_during, start_connector, wait_ready  # noqa: E402


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


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--project', type=Path, default=Path(__file__).resolve().parent.parent)
    a = a.parse_args()
    p, base = start_connector('--demo', '--embedding', 'off', project=a.project)
    try:
        wait_ready(base, proc=p)
        junk = b' ' * 50_000_000
        def valid(entries: int) -> bytes:  # a conversation as the app sends it: every Chinese character \u-escaped
            turns = [{'role': 'user' if i % 2 == 0 else 'assistant', 'content': '长城' * 650} for i in range(entries)]
            return json.dumps({'message': 'hi', 'history': turns, 'settings': {'maxResponseTokens': 1}}).encode()
        cases = [('50 MB, chunked, no Content-Length', junk, True), ('50 MB, with its Content-Length', junk, False)]
        cases += [(f'a valid request of {len(v) / 1e6:.1f} MB ({n:,} history entries), chunked', v, True)
                  for n in (1000, 2400) for v in [valid(n)]]
        print(f'{"request to /chat":<62} {"RSS before":>11} {"peak":>9}  reply')
        for name, data, chunked in cases:
            before, peak, reply = peak_during(lambda: post(base, '/chat', data, chunked), p.pid, sampled=True)
            print(f'{name:<62} {before / 2**20:>8.0f} MB {peak / 2**20:>6.0f} MB  {reply[:60]}')
    finally:
        p.kill(); p.wait()


if __name__ == '__main__':
    main()
