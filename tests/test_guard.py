"""Issue 15's probes against a real `python -m fc_chatglm --demo` process: web pages (the connector's own origin
included), DNS rebinding, WebSocket handshakes, slow and half-open connections, a body that never comes, a LAN bind,
the interactive docs. Each now gets a refusal, and the log says so once per kind and interval; the app's own requests
(nbs/protocol.md: its Host forms, chunked bodies, no Origin) pass, and a key past ASCII matches as UTF-8 bytes."""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from fc_chatglm.launch import PROJECT
from fc_chatglm.testing import app_stream, ready_connector, start_connector

LIMITS = {'header_timeout': 1, 'body_timeout': 1, 'max_connections': 16}


def connector_folder(path, config: dict):
    "A connector folder as the app unpacks it, with `config` as its config.json."
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / 'connector.json', path / 'connector.json')
    (path / 'config.json').write_text(json.dumps({'embedding': 'off', **config}), encoding='utf-8')
    return path


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    with ready_connector('--demo', cwd=connector_folder(tmp_path_factory.mktemp('guard'), LIMITS)) as url: yield url


def port(base: str) -> int: return int(base.rsplit(':', 1)[1])


def raw(base: str, data: bytes, timeout: float = 30) -> bytes:
    "Send `data` on a new connection; everything the server sends until it closes the connection."
    with socket.create_connection(('127.0.0.1', port(base)), timeout=timeout) as s:
        s.sendall(data)
        out = b''
        while d := s.recv(65536): out += d
        return out


BODY = json.dumps({'message': 'hi', 'settings': {'temperature': 0, 'maxResponseTokens': 8}})


def test_a_web_page_cannot_make_the_model_work(base):
    r = httpx.post(base + '/chat', content=BODY, headers={'Origin': 'http://evil.example', 'Content-Type': 'text/plain'})
    assert r.status_code == 403 and 'allowed_origins' in r.json()['error'], r.text
    form = httpx.post(base + '/text', data={'message': 'hi'}, headers={'Origin': 'http://evil.example'})
    assert form.status_code == 403
    nav = httpx.get(base + '/health', headers={'Sec-Fetch-Site': 'cross-site'})
    assert nav.status_code == 403


def test_the_connectors_own_origin_is_a_web_page_too(base):
    "A tab left open on another server that once had this port is, to the browser, of the connector's own origin."
    for name in ('127.0.0.1', 'localhost', '[::1]'):
        r = httpx.post(base + '/chat', content=BODY, headers={'Origin': f'http://{name}:{port(base)}', 'Content-Type': 'text/plain'})
        assert r.status_code == 403 and 'allowed_origins' in r.json()['error'], (name, r.text)


def test_a_cross_site_cancel_does_not_stop_another_clients_stream(base):
    long = json.dumps({'message': 'hi', 'settings': {'temperature': 0, 'maxResponseTokens': 300}}).encode()
    alone, done = app_stream(base, '/chat/stream', long)
    assert done and alone
    answers = []
    def page_cancels(reply, sock):  # once the stream is under way, a web page posts the cancel
        if len(answers) == 0 and len(reply) > 0:
            answers.append(httpx.post(base + '/chat/stream/cancel', headers={'Origin': 'http://evil.example'}).status_code)
    replies, done = app_stream(base, '/chat/stream', long, on_line=page_cancels)
    assert answers == [403] and done and replies[-1] == alone[-1], (answers, replies[-1:], alone[-1:])


def test_dns_rebinding_is_refused(base):
    for path in ('/health', '/chat'):
        r = httpx.request('GET' if path == '/health' else 'POST', base + path, content=None if path == '/health' else BODY,
                          headers={'Host': f'evil.example:{port(base)}'})
        assert r.status_code == 403 and 'DNS rebinding' in r.json()['error'], r.text
    assert httpx.get(base + '/health', headers={'Host': f'127.0.0.1:{port(base) + 1}'}).status_code == 403


def test_the_apps_own_requests_pass(base):
    replies, done = app_stream(base, '/chat/stream', BODY.encode())  # Host: http://127.0.0.1:port, the whole base_url
    assert done and replies
    def chunks():  # the app's HttpClient sends full-reply bodies chunked, with no Content-Length
        yield BODY[:10].encode(); yield BODY[10:].encode()
    r = httpx.post(base + '/chat', content=chunks(), headers={'Content-Type': 'application/json; charset=utf-8'})
    assert r.status_code == 200 and r.json()['isError'] is False, r.text
    for host in (f'localhost:{port(base)}', f'127.0.0.1:{port(base)}'):
        assert httpx.get(base + '/health', headers={'Host': host}).status_code == 200


def test_the_interactive_docs_are_off(base):
    for path in ('/docs', '/redoc'):
        assert httpx.get(base + path).status_code == 404
    schema = httpx.get(base + '/openapi.json').json()
    assert '/chat' in schema['paths']


def test_slow_headers_are_answered_and_closed(base):
    start = time.time()
    out = raw(base, f'POST /chat/stream HTTP/1.1\r\nHost: http://127.0.0.1:{port(base)}\r\nContent-'.encode())
    assert out.startswith(b'HTTP/1.1 408') and b'header_timeout' in out, out
    assert time.time() - start < 20


def test_a_body_that_never_comes_does_not_hang_a_stream(base):
    start = time.time()
    out = raw(base, f'POST /chat/stream HTTP/1.1\r\nHost: http://127.0.0.1:{port(base)}\r\nContent-Type: application/json\r\n'
                    f'Content-Length: {10**12}\r\n\r\n{{"message"'.encode())
    # the declared length passes max_request_bytes: refused unread, as a stream the app shows
    assert out.startswith(b'HTTP/1.1 200') and b'max_request_bytes' in out and out.rstrip().endswith(b'[DONE]'), out
    assert time.time() - start < 20
    for path in ('/chat/stream', '/text'):  # a length under the cap, and a body that stops: the body deadline
        start = time.time()
        slow = raw(base, f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port(base)}\r\nContent-Length: 100\r\n\r\n{{"mess'.encode())
        assert slow.startswith(b'HTTP/1.1 408') and b'body_timeout' in slow, slow
        assert time.time() - start < 20


def test_half_open_connections_are_capped_then_released(base):
    held = [socket.create_connection(('127.0.0.1', port(base)), timeout=10) for _ in range(LIMITS['max_connections'])]
    try:
        time.sleep(0.2)
        busy = raw(base, b'')  # sending nothing: unread bytes would turn the server's close into a reset
        assert busy.startswith(b'HTTP/1.1 503') and b'max_connections' in busy, busy
        closed = [s.recv(65536) for s in held]  # each, having sent nothing, is closed after header_timeout
        assert closed == [b''] * len(held), closed[:2]
    finally:
        for s in held: s.close()
    time.sleep(0.2)
    assert httpx.get(base + '/health').json()['status'] == 'ready'


def test_a_lan_bind_needs_a_key(tmp_path):
    folder = connector_folder(tmp_path / 'open', {})
    env = {**os.environ, 'PYTHONPATH': str(PROJECT) + os.pathsep + os.environ.get('PYTHONPATH', '')}
    r = subprocess.run([sys.executable, '-m', 'fc_chatglm', '--demo', '--host', '0.0.0.0', '--port', '0'], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'will not listen on 0.0.0.0' in r.stderr and 'api_key' in r.stderr, (r.returncode, r.stderr[-500:])
    keyed = connector_folder(tmp_path / 'keyed', {'api_key': 'correct horse'})
    proc, url = start_connector('--demo', '--host', '0.0.0.0', cwd=keyed)
    try:
        url = url.replace('0.0.0.0', '127.0.0.1')
        assert httpx.get(url + '/health').status_code == 401
        assert httpx.get(url + '/health', headers={'Authorization': 'Bearer wrong'}).status_code == 401
        assert httpx.get(url + '/health', headers={'Authorization': 'Bearer correct horse'}).status_code == 200
    finally:
        proc.kill(); proc.wait()


def test_a_key_past_ascii_is_matched_as_its_utf8_bytes(tmp_path):
    "The header's bytes against the key's UTF-8 (the key ends in 0xC3 0x85, whose last byte str.strip() took as U+0085)."
    key = 'clé-à-Å'
    proc, url = start_connector('--demo', cwd=connector_folder(tmp_path, {'api_key': key}))
    try:
        sent = lambda raw: httpx.get(url + '/health', headers={'Authorization': b'Bearer ' + raw}).status_code
        assert sent(key.encode('utf-8')) == 200
        assert sent(key.encode('latin-1')) == 401 and sent(key[:-1].encode('utf-8')) == 401
    finally:
        proc.kill(); proc.wait()


@pytest.fixture(scope='module')
def logged(tmp_path_factory):
    "A connector whose log is kept, with no WebSocket library importable (as in a plain install): its URL and log file."
    folder = tmp_path_factory.mktemp('logged')
    shadow = folder / 'shadow' / 'websockets'
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'websockets'\", name='websockets')\n")
    log = folder / 'stderr.log'
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('PYTHONPATH', str(shadow.parent))
        with ready_connector('--demo', cwd=connector_folder(folder / 'c', {}), log=log) as url: yield url, log


def handshake(base: str, origin: str) -> bytes:
    "A WebSocket handshake as a page's `new WebSocket(...)` sends it; all the server sends until it closes."
    key = base64.b64encode(os.urandom(16)).decode()
    return raw(base, f'GET /chat/stream HTTP/1.1\r\nHost: 127.0.0.1:{port(base)}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                     f'Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n'.encode(), timeout=10)


def test_a_cross_site_websocket_handshake_is_refused_and_logged_once(logged):
    base, log = logged
    out = handshake(base, 'http://ws.example')
    assert out.startswith(b'HTTP/1.1 403') and b'allowed_origins' in out, out
    time.sleep(0.3)
    text = log.read_text(errors='replace')
    assert 'upgrade' not in text.lower() and 'websocket' not in text.lower(), text[-2000:]  # uvicorn's two warnings: gone
    lines = [l for l in text.splitlines() if 'refused (403)' in l and "Origin 'http://ws.example'" in l]
    assert len(lines) == 1 and "'/chat/stream'" in lines[0], text[-2000:]


def test_a_flood_of_refusals_is_one_line_per_interval_and_counted(logged):
    base, log = logged
    host = f'rebind.example:{port(base)}'
    with httpx.Client() as client:
        codes = {client.get(base + '/health', headers={'Host': host}).status_code for _ in range(200)}
        assert codes == {403}
        time.sleep(5.2)  # `RefusalLog`'s interval
        assert client.get(base + '/health', headers={'Host': host}).status_code == 403
    time.sleep(0.3)
    lines = [l for l in log.read_text(errors='replace').splitlines() if f"Host '{host}'" in l]
    assert len(lines) == 2 and 'DNS rebinding' in lines[0] and 'more like it' not in lines[0], lines
    assert 'and 199 more like it' in lines[1], lines


def test_the_stand_in_server_refuses_a_huge_body_without_reading_it(tmp_path, monkeypatch):
    shadow = tmp_path / 'shadow' / 'fastapi'
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text("raise ModuleNotFoundError(\"No module named 'fastapi'\", name='fastapi')\n")
    monkeypatch.setenv('PYTHONPATH', str(shadow.parent))
    proc, url = start_connector('--demo', cwd=connector_folder(tmp_path / 'c', LIMITS))
    try:
        for n in (10**12, 2 * 10**9):
            out = raw(url, f'POST /chat HTTP/1.1\r\nHost: 127.0.0.1:{port(url)}\r\nContent-Length: {n}\r\n\r\n'.encode())
            assert out.startswith(b'HTTP/1.1 413'), out
        r = httpx.post(url + '/chat', content=BODY, headers={'Origin': 'http://evil.example'})
        assert r.status_code == 403
        assert httpx.post(url + '/chat', content=BODY).json()['isError'] is True
        assert proc.poll() is None
    finally:
        proc.kill(); proc.wait()


# The check itself, on generated headers (pure and fast: no server).
from hypothesis import given, settings, strategies as st  # noqa: E402

from fc_chatglm.guard import Guard, screen, split_host  # noqa: E402

header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=60)
names = st.sampled_from(['Host', 'host', 'Origin', 'Sec-Fetch-Site', 'Authorization', 'Content-Type', 'X-Other'])


@settings(max_examples=2000, derandomize=True, deadline=None)
@given(st.lists(st.tuples(names, header_text), max_size=6), st.sampled_from(['GET', 'POST', 'OPTIONS']))
def test_the_check_never_fails_and_admits_only_this_machine(headers, method):
    answer = screen(method, '/chat', headers, Guard(), 8000)
    if answer is None:  # admitted: one Host naming this machine on port 8000, no web page
        hosts = [v for k, v in headers if k.lower() == 'host']
        assert len(hosts) == 1 and split_host(hosts[0]) in {('127.0.0.1', 8000), ('localhost', 8000), ('::1', 8000)}, headers
        origins = [v for k, v in headers if k.lower() == 'origin']
        assert origins == [], headers  # no page: none is listed, the connector's own origin included
    else:
        assert answer.status in (403, 204, 401) and answer.body() or answer.status == 204


@settings(max_examples=500, derandomize=True, deadline=None)
@given(st.sampled_from(['127.0.0.1', 'localhost', '[::1]']), st.booleans(), st.sampled_from([None, 'none', 'same-origin']))
def test_the_apps_requests_always_pass(name, whole_url, site):
    host = f'http://{name}:8000' if whole_url else f'{name}:8000'  # streams send the whole base_url (nbs/protocol.md)
    headers = [('Host', host), ('Content-Type', 'application/json')] + ([('Sec-Fetch-Site', site)] if site else [])
    assert screen('POST', '/chat/stream', headers, Guard(), 8000) is None
