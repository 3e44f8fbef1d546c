"""Output that cannot kill the connector. The app reads the process's stdout and stderr through pipes, and on
Windows Python writes to a pipe in the locale's code page (cp1252, cp936, ...): printing a character outside
it raises UnicodeEncodeError, and the app never notices a connector that died (nbs/protocol.md). Started with
such an encoding, from a folder whose path is Chinese, with a model folder and errors quoting Chinese text,
the real `python -m fc_chatglm` process starts, prints, answers, and is still running afterwards."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import httpx
import pytest

from fc_chatglm.launch import PROJECT
from fc_chatglm.testing import app_stream, start_connector, wait_settled

ENCODINGS = ['cp1252', 'ascii']  # a Western Windows code page, and the narrowest of all


@pytest.fixture
def folder(tmp_path):
    "A connector folder as the app unpacks it, under a Chinese user name."
    app = tmp_path / '张三' / 'fc-chatglm'
    app.mkdir(parents=True)
    shutil.copy(PROJECT / 'connector.json', app / 'connector.json')
    return app


def env(encoding: str) -> dict:
    return {**os.environ, 'PYTHONIOENCODING': encoding, 'PYTHONUNBUFFERED': '1',
            'PYTHONPATH': str(PROJECT) + os.pathsep + os.environ.get('PYTHONPATH', '')}


def start(folder, encoding: str, *args: str) -> tuple[subprocess.Popen, str, list[bytes]]:
    "The connector started in `folder` with `PYTHONIOENCODING=encoding`; the process, its URL and the lines it printed."
    printed = []
    p, url = start_connector('--embedding', 'off', *args, cwd=folder, env={'PYTHONIOENCODING': encoding},
                             log=folder / 'stderr.log', printed=printed)
    return p, url, printed


def still_running(p: subprocess.Popen, folder) -> bytes:
    "The log so far, once sure the process lives and printed no traceback."
    log = (folder / 'stderr.log').read_bytes()
    assert p.poll() is None, log[-2000:]
    assert b'Traceback' not in log and b'UnicodeEncodeError' not in log, log[-2000:]
    return log


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_a_model_folder_with_a_chinese_path_that_fails_to_load(folder, encoding):
    (folder / '模型').mkdir()
    p, base, printed = start(folder, encoding, '--model', '模型')
    try:
        assert printed[0].startswith(b'fc_chatglm: starting') and all(l.isascii() for l in printed), printed
        h = wait_settled(base)
        assert h['status'] == 'failed' and '模型' in h['error'], h
        r = httpx.post(base + '/chat', json={'message': '你好'}).json()
        assert r['isError'] and 'The model folder 模型' in r['content'], r
        shown, done = app_stream(base, '/chat/stream', json.dumps({'message': '你好'}).encode())
        assert done and '模型' in shown[0]
        log = still_running(p, folder)
        assert b'\\u6a21\\u578b' in log or '模型'.encode(encoding, 'backslashreplace') in log, log[-2000:]  # escaped, not fatal
    finally:
        p.kill(); p.wait()


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_the_demo_model_answers_from_a_chinese_folder(folder, encoding):
    p, base, printed = start(folder, encoding, '--demo')
    try:
        assert wait_settled(base)['status'] == 'ready'
        r = httpx.post(base + '/chat', json={'message': '你好', 'settings': {'temperature': 0, 'maxResponseTokens': 10}}).json()
        assert r['isError'] is False and r['content'], r
        shown, done = app_stream(base, '/text/stream', json.dumps({'message': '从前', 'settings': {'maxResponseTokens': 10}}).encode())
        assert done and shown
        still_running(p, folder)
    finally:
        p.kill(); p.wait()


def test_a_config_error_quoting_chinese_text(folder):
    (folder / 'config.json').write_text('{"model": "模型\\tnew"}', encoding='utf-8')  # a tab: "\t" in JSON
    p, base, _ = start(folder, 'ascii', '--demo')
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and "'模型\\tnew' holds a control character" in h['error'], h
        r = httpx.post(base + '/text', json={'message': 'hi'}).json()
        assert r['isError'] and '模型' in r['content'], r
        assert b'\\u6a21\\u578b' in still_running(p, folder)
    finally:
        p.kill(); p.wait()


@pytest.mark.parametrize('encoding', ENCODINGS)
def test_pack_prints_a_chinese_path(tmp_path, encoding):
    out = tmp_path / '打包' / 'fc_chatglm.fctor'
    r = subprocess.run([sys.executable, '-m', 'fc_chatglm', 'pack', '--out', str(out)], cwd=PROJECT, env=env(encoding),
                       capture_output=True, timeout=120)
    assert r.returncode == 0 and b'Traceback' not in r.stderr, r.stderr[-2000:]
    assert b'\\u6253\\u5305' in r.stdout and zipfile.is_zipfile(out), r.stdout
