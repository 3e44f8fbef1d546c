"""Faults, with real processes and sockets: the connector killed (SIGKILL) in the middle of a stream and
started again on the same port, as the app does after a crash; the model thread raising mid-generation; the
embedding model failing to load; a client that leaves during the prompt. After each, the next request is
answered correctly, and the server's memory (RSS, psutil) is back where it was: the figures are printed
(`pytest -s tests/test_faults.py`)."""
import json
import socket
import threading
import time

import httpx
import psutil
import pytest

from fc_chatglm.embed import Embeddings
from fc_chatglm.schemas import UserError
from fc_chatglm.testing import app_stream, serve_in_thread, start_connector, wait_ready
from fc_chatglm.load import LoadOptions, load_engine
from fc_chatglm.server import ModelHost, create_app, open_socket

MB = 2**20
GREEDY = {'temperature': 0, 'maxResponseTokens': 24}


def body(message: str, settings: dict = GREEDY) -> bytes:
    return json.dumps({'message': message, 'history': [], 'settings': settings}).encode()


def rss(pid: int | None = None) -> float:
    "Resident memory of a process (this one by default), in MB."
    return psutil.Process(pid).memory_info().rss / MB


def wait_idle(base: str, timeout: float = 10) -> float:
    "Seconds until no generation runs or waits."
    start = time.time()
    while (h := httpx.get(base + '/health').json())['streams'] or h['waiting']:
        assert time.time() - start < timeout, h
        time.sleep(0.02)
    return time.time() - start


def test_killed_mid_stream_and_started_again_on_the_same_port():
    proc, base = start_connector('--demo')
    port = int(base.rsplit(':', 1)[1])
    try:
        wait_ready(base, proc=proc)
        reference = app_stream(base, '/chat/stream', body('hello'))[0][-1]
        before = rss(proc.pid)
        lines = []
        def kill_after_two(reply, sock):
            lines.append(reply)
            if len(lines) == 2: proc.kill()  # Popen.kill: SIGKILL on POSIX, TerminateProcess on Windows
        replies, done = app_stream(base, '/chat/stream', body('a long story', {'temperature': 0, 'maxResponseTokens': 1500}),
                                   on_line=kill_after_two)
        proc.wait()
        assert not done and len(replies) >= 2
    finally:
        proc.kill(); proc.wait()
    killed = time.time()
    sock = open_socket('127.0.0.1', port)  # the port is free at once: the server's own bind (SO_REUSEADDR off on Windows)
    sock.close()
    proc, again = start_connector('--demo', '--port', str(port))  # the app restarts it on the manifest's port
    try:
        listening = time.time() - killed
        assert again == base
        wait_ready(again, proc=proc)
        serving = time.time() - killed
        assert app_stream(again, '/chat/stream', body('hello'))[0][-1] == reference
        after = rss(proc.pid)
        print(f'\nrestart on port {port}: listening {listening:.2f} s after the kill (most of it importing torch and '
              f'transformers), ready {serving:.2f} s; RSS {before:.0f} MB before the kill, {after:.0f} MB after the restart')
        assert listening < 180  # generous: a loaded machine imports slowly
        assert after < before * 1.5 + 50
    finally:
        proc.kill(); proc.wait()


class Flaky:
    "The demo engine, made to raise in its model thread after a few pieces of text while `fail` is set."
    def __init__(self, inner):
        self.inner, self.fail = inner, False

    def generate(self, request, cancel=None, on_text=lambda s: None):
        pieces = [0]
        def text(piece):
            pieces[0] += 1
            if self.fail and pieces[0] > 3: raise RuntimeError('CUDA error: an illegal memory access was encountered')
            on_text(piece)
        return self.inner.generate(request, cancel or threading.Event(), text)

    def __getattr__(self, name): return getattr(self.inner, name)


def broken_embedder(spec, device):
    raise UserError('The embedding model in D:/models/text2vec cannot be loaded: OSError: config.json is missing')


@pytest.fixture(scope='module')
def local(tmp_path_factory):
    "The connector in this process (so that a fault can be injected) on a real socket: (base URL, the flaky engine)."
    host = ModelHost()
    engine = Flaky(load_engine(LoadOptions(demo=True, demo_dir=tmp_path_factory.mktemp('demo'))))
    host.ready(engine)
    server, base = serve_in_thread(create_app(host, embeddings=Embeddings('minilm', 'cpu', load=broken_embedder)))
    yield base, engine
    server.should_exit = True


def settle(base: str, reference: str, rounds: int = 3) -> float:
    "Serve a few correct requests (warming caches), then the RSS of this process in MB."
    for _ in range(rounds): assert httpx.post(base + '/chat', content=body('hello'), timeout=60).json()['content'] == reference
    return rss()


def test_the_model_thread_raising_mid_generation(local):
    base, engine = local
    reference = httpx.post(base + '/chat', content=body('hello'), timeout=60).json()['content']
    before = settle(base, reference)
    for _ in range(5):
        engine.fail = True
        replies, done = app_stream(base, '/chat/stream', body('hello'))
        rest = httpx.post(base + '/text', content=body('hello'), timeout=60).json()
        engine.fail = False
        assert done and 'The model failed while answering: RuntimeError: CUDA error' in replies[-1], replies[-1:]
        assert rest['isError'] and 'illegal memory access' in rest['content'], rest
        assert httpx.post(base + '/chat', content=body('hello'), timeout=60).json() == {'content': reference, 'isError': False}
        assert app_stream(base, '/chat/stream', body('hello'))[0][-1] == reference
    after = settle(base, reference)
    print(f'\nmodel thread raising, 5 times: RSS {before:.0f} MB before, {after:.0f} MB after')
    assert after - before < 100


def test_the_embedding_model_failing_to_load(local):
    base, _ = local
    reference = httpx.post(base + '/chat', content=body('hello'), timeout=60).json()['content']
    before = settle(base, reference)
    for _ in range(3):
        r = httpx.post(base + '/embedding', content=b'hello', headers={'Content-Type': 'text/plain; charset=utf-8'})
        assert r.status_code == 503 and 'config.json is missing' in r.json()['error'], r.text
        assert httpx.post(base + '/chat', content=body('hello'), timeout=60).json()['content'] == reference
    h = httpx.get(base + '/health').json()
    assert h['status'] == 'ready' and h['embedding']['status'] == 'failed' and 'config.json is missing' in h['embedding']['error']
    after = settle(base, reference)
    print(f'\nembedding model failing to load: RSS {before:.0f} MB before, {after:.0f} MB after')
    assert after - before < 100


def test_a_client_that_leaves_during_the_prompt(local):
    base, _ = local
    reference = httpx.post(base + '/chat', content=body('hello'), timeout=60).json()['content']
    before = settle(base, reference)
    port = int(base.rsplit(':', 1)[1])
    long = body('tell me ' * 400, {'temperature': 0, 'maxResponseTokens': 1500})
    stops = []
    for path in ('/chat', '/chat/stream', '/text'):
        for half in (False, True):  # the whole prompt sent, or only half of it
            s = socket.create_connection(('127.0.0.1', port), timeout=30)
            data = long[:len(long) // 2] if half else long
            s.sendall(f'POST {path} HTTP/1.1\r\nHost: {base}\r\nContent-Type: application/json\r\n'
                      f'Content-Length: {len(long)}\r\n\r\n'.encode() + data)
            time.sleep(0.3)
            s.close()
            stops.append(wait_idle(base))
            assert httpx.post(base + '/chat', content=body('hello'), timeout=60).json() == {'content': reference, 'isError': False}
    after = settle(base, reference)
    print(f'\nclients leaving during the prompt, 6 times: generation idle {max(stops):.2f} s after at most; '
          f'RSS {before:.0f} MB before, {after:.0f} MB after')
    assert after - before < 100
