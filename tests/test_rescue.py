"""A broken install, as a Fantasy Copilot user meets it: the real `python -m fc_chatglm` process with a
requirement that cannot be imported still listens, and every endpoint says what to install."""
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from fc_chatglm.guard import Guard
from fc_chatglm.launch import PROJECT
from fc_chatglm.rescue import rescue_server
from fc_chatglm.testing import app_stream, start_connector


def hide(tmp_path, monkeypatch, module: str, error: str):
    "Make `import module` raise `error` in the connector process, as an uninstalled or broken package does."
    shadow = tmp_path / 'shadow' / module
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text(f'raise {error}\n')
    monkeypatch.setenv('PYTHONPATH', str(shadow.parent))  # start_connector puts the project first, then this


@pytest.fixture
def folder(tmp_path, monkeypatch):
    "A connector folder as the app unpacks it, under a user folder that is not ASCII, printing to a pipe that is."
    app = tmp_path / '\u5f20\u4e09' / 'fc-chatglm'  # C:\Users\<a Chinese name>\...
    app.mkdir(parents=True)
    shutil.copy(PROJECT / 'connector.json', app / 'connector.json')
    monkeypatch.setenv('PYTHONIOENCODING', 'ascii')  # a code page without those characters
    return app


def test_a_missing_requirement_is_told_on_every_endpoint(tmp_path, monkeypatch, folder):
    hide(tmp_path, monkeypatch, 'fastapi', "ModuleNotFoundError(\"No module named 'fastapi'\", name='fastapi')")
    proc, base = start_connector('--demo', cwd=folder)
    try:
        reply = httpx.post(base + '/chat', json={'message': 'hi'}, timeout=10).json()
        problem = reply['content']
        assert reply['isError'] is True and "'fastapi' is not installed" in problem, reply
        assert sys.executable in problem and 'pip install -r requirements.txt' in problem and str(folder) in problem
        body = json.dumps({'message': '\u4f60\u597d', 'history': []}).encode()
        assert app_stream(base, '/chat/stream', body) == ([problem], True)
        assert app_stream(base, '/text/stream', body) == ([problem], True)
        assert httpx.post(base + '/text/stream/cancel').status_code == 200
        r = httpx.post(base + '/embedding', content=b'hello', headers={'Content-Type': 'text/plain; charset=utf-8'})
        assert (r.status_code, r.json()['error']) == (503, problem)
        assert httpx.get(base + '/health').json()['status'] == 'failed'
    finally:
        proc.kill(); proc.wait()


def test_a_library_that_fails_to_load_is_told_with_its_error(tmp_path, monkeypatch, folder):
    hide(tmp_path, monkeypatch, 'torch', "OSError('[WinError 126] Error loading \"fbgemm.dll\" or one of its dependencies.')")
    proc, base = start_connector(cwd=folder)
    try:
        problem = httpx.post(base + '/text', json={'message': 'hi'}, timeout=10).json()['content']
        assert 'OSError' in problem and 'fbgemm.dll' in problem and 'vc_redist.x64.exe' in problem, problem  # the Visual C++ runtime
    finally:
        proc.kill(); proc.wait()


def test_pack_with_a_missing_requirement_prints_the_problem(tmp_path, monkeypatch, folder):
    hide(tmp_path, monkeypatch, 'torch', "ModuleNotFoundError(\"No module named 'torch'\", name='torch')")
    env = {**os.environ, 'PYTHONPATH': f'{PROJECT}{os.pathsep}{os.environ["PYTHONPATH"]}'}
    r = subprocess.run([sys.executable, '-m', 'fc_chatglm', 'pack'], cwd=folder, capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 1 and 'PyTorch is not installed' in r.stderr, (r.returncode, r.stderr)
    assert not (folder / 'dist').exists()


def test_a_burst_of_connections_waits_in_the_backlog():
    "40 connections at once, before the stand-in accepts any: each is taken into the backlog at once, as by the real server."
    server = rescue_server('a problem', '127.0.0.1', 0, {})  # listening, not yet accepting
    clients = [socket.socket() for _ in range(40)]
    try:
        for c in clients: c.setblocking(False); c.connect_ex(server.server_address)
        connected, deadline = set(), time.monotonic() + 0.5  # a connection past the backlog waits a second for a retry
        while len(connected) < len(clients) and time.monotonic() < deadline:
            _, ready, _ = select.select([], [c for c in clients if c not in connected], [], 0.05)
            connected |= {c for c in ready if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0}
        assert len(connected) == len(clients), f'{len(connected)} of {len(clients)} connected'
    finally:
        for c in clients: c.close()
        server.server_close()



def test_the_stand_in_server_logs_its_refusals(caplog):
    "The stand-in server tells each refusal to the log as the real server does (the same `RefusalLog`)."
    server = rescue_server('broken', '127.0.0.1', 0, {'/chat': 'chat-rest'}, Guard())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f'http://127.0.0.1:{server.server_address[1]}'
        with caplog.at_level('WARNING', logger='fc_chatglm'):
            assert httpx.post(base + '/chat', content=b'{}', headers={'Origin': 'http://stand-in.example'}).status_code == 403
        assert any("Origin 'http://stand-in.example'" in r.getMessage() for r in caplog.records), caplog.text
    finally:
        server.shutdown(); server.server_close()
