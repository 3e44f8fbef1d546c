"""The connector as Fantasy Copilot meets it: a real `python -m fc_chatglm --demo` process, spoken to on
raw sockets with hand-written HTTP/1.1 and read line by line the way the app reads (PROTOCOL.md)."""
import json
import re
import socket
import threading
import time

import httpx
import pytest

from fc_chatglm.launch import start_connector
from fc_chatglm.server import app_stream

LONG = {'temperature': 0, 'maxResponseTokens': 1500}


@pytest.fixture(scope='module')
def base():
    proc, url = start_connector('--demo')
    deadline = time.time() + 120
    while httpx.get(url + '/health').json()['status'] != 'ready':
        assert time.time() < deadline, 'the demo model did not load'
        time.sleep(0.1)
    yield url
    proc.kill()
    proc.wait()


def body(message, settings=None, history=None, ascii_only=True) -> bytes:
    "A request body as the app writes it: every non-ASCII character \\u-escaped."
    return json.dumps({'message': message, 'history': history or [], 'settings': settings or {}},
                      ensure_ascii=ascii_only).encode()


def send_request(base, path, data: bytes | None, close: bool = False) -> socket.socket:
    """Send a POST written by hand as the app writes it and return the open socket, unread. With no
    data it is the app's cancel: no body and no content type. `close` asks the server to close after."""
    host, port = base.removeprefix('http://').split(':')
    s = socket.create_connection((host, int(port)), timeout=30)
    ctype = 'Content-Type: application/json\r\n' if data is not None else ''
    extra = 'Connection: close\r\n' if close else ''
    s.sendall(f'POST {path} HTTP/1.1\r\nHost: {base}\r\n{ctype}Content-Length: {len(data or b"")}\r\n{extra}\r\n'.encode() + (data or b''))
    return s


def raw_post(base, path, data: bytes | None) -> tuple[int, bytes]:
    "One hand-written POST; returns the status and the raw bytes after the headers."
    with send_request(base, path, data, close=True) as s:
        raw = b''
        while chunk := s.recv(65536): raw += chunk
    head, _, rest = raw.partition(b'\r\n\r\n')
    return int(head.split()[1]), rest


def dechunk(payload: bytes) -> list[bytes]:
    "The chunks of a chunked HTTP body, as sent."
    chunks = []
    while payload:
        size, _, payload = payload.partition(b'\r\n')
        n = int(size, 16)
        if n == 0: break
        chunks.append(payload[:n])
        payload = payload[n + 2:]
    return chunks


def cancel(base, feature='chat') -> dict:
    "The app's cancel: a POST with no body and no content type."
    status, rest = raw_post(base, f'/{feature}/stream/cancel', None)
    assert status == 200
    return json.loads(rest)


def rest_reply(base, path, message, settings):
    r = httpx.post(base + path, content=body(message, settings), headers={'Content-Type': 'application/json'}, timeout=60)
    assert r.status_code == 200
    return r.json()


def idle(base, timeout=10):
    deadline = time.time() + timeout
    while (h := httpx.get(base + '/health').json())['streams'] or h['waiting']:
        assert time.time() < deadline, h
        time.sleep(0.02)


def test_full_stream_is_cumulative_lines_then_done(base):
    replies, done = app_stream(base, '/chat/stream', body('你好，请介绍一下你自己', {'temperature': 1, 'maxResponseTokens': 80}))
    assert done and len(replies) > 1
    for a, b in zip(replies, replies[1:]):
        assert b.startswith(a) or b == a.strip(), (a, b)  # each line replaces the last with more
    assert not any('\ufffd' in r for r in replies)
    assert re.search(r'[\u4e00-\u9fff]', replies[-1]), 'the demo vocabulary is half Chinese'


def test_every_json_line_is_whole_inside_one_chunk(base):
    status, payload = raw_post(base, '/chat/stream', body('hello', {'temperature': 1, 'maxResponseTokens': 60}))
    assert status == 200
    chunks = dechunk(payload)
    assert chunks[-1] == b'[DONE]\n'
    for c in chunks:
        assert c.endswith(b'\n') and c.count(b'\n') == 1, c  # one whole line per chunk
        assert c.startswith(b'{') or c == b'[DONE]\n'
        assert c.isascii()


def test_greedy_stream_ends_with_the_rest_reply(base):
    s = {'temperature': 0, 'maxResponseTokens': 40}
    replies, done = app_stream(base, '/chat/stream', body('你好', s))
    assert done and replies[-1] == rest_reply(base, '/chat', '你好', s)['content']


def test_text_completion_stream_and_rest(base):
    s = {'temperature': 0, 'maxResponseTokens': 30}
    replies, done = app_stream(base, '/text/stream', body('Once upon a time', s))
    assert done and replies[-1] == rest_reply(base, '/text', 'Once upon a time', s)['content']


def test_cancel_mid_stream_stops_it_and_the_next_request_is_whole(base):
    seen, t_cancel = [], []
    def on_line(reply, sock):
        seen.append(reply)
        if len(seen) == 3: t_cancel.append(time.perf_counter()); cancel(base)
    replies, done = app_stream(base, '/chat/stream', body('tell me everything', LONG), on_line)
    elapsed = time.perf_counter() - t_cancel[0]
    assert done and elapsed < 2, elapsed
    assert len(replies) < 100  # far from 1500 tokens
    idle(base)
    s = {'temperature': 0, 'maxResponseTokens': 30}
    again, done = app_stream(base, '/chat/stream', body('你好', s))
    assert done and again[-1] == rest_reply(base, '/chat', '你好', s)['content']


def test_stray_cancel_changes_nothing_later(base):
    idle(base)
    assert cancel(base) == {'cancelled': 0}
    assert cancel(base, 'text') == {'cancelled': 0}
    s = {'temperature': 0, 'maxResponseTokens': 50}
    replies, done = app_stream(base, '/chat/stream', body('after a stray cancel', s))
    assert done and replies[-1] == rest_reply(base, '/chat', 'after a stray cancel', s)['content']


def test_cancel_reaches_only_its_feature(base):
    idle(base)
    got = []
    def run(): got.append(app_stream(base, '/text/stream', body('a long text', {'temperature': 0, 'maxResponseTokens': 300})))
    t = threading.Thread(target=run); t.start()
    while httpx.get(base + '/health').json()['streams'] == 0: time.sleep(0.01)
    assert cancel(base, 'chat') == {'cancelled': 0}
    t.join(60)
    replies, done = got[0]
    assert done
    assert replies[-1] == rest_reply(base, '/text', 'a long text', {'temperature': 0, 'maxResponseTokens': 300})['content']


def test_client_that_disconnects_stops_its_generation(base):
    idle(base)
    s = send_request(base, '/chat/stream', body('never mind', {'temperature': 0, 'maxResponseTokens': 1800}))
    got = b''
    while got.count(b'\n{') < 3: got += s.recv(4096)
    s.close()
    t0 = time.perf_counter()
    idle(base, timeout=5)
    stopped_after = time.perf_counter() - t0
    r = rest_reply(base, '/chat', 'hi', {'temperature': 0, 'maxResponseTokens': 5})
    assert not r['isError'] and stopped_after < 2, stopped_after


def test_four_concurrent_streams_each_get_their_own_reply(base):
    idle(base)
    prompts = ['first question', '第二个问题', 'third one 😀', 'fourth']
    s = {'temperature': 0, 'maxResponseTokens': 60}
    results = {}
    def run(p): results[p] = app_stream(base, '/chat/stream', body(p, s))
    threads = [threading.Thread(target=run, args=(p,)) for p in prompts]
    for t in threads: t.start()
    for t in threads: t.join(120)
    for p in prompts:
        replies, done = results[p]
        assert done, p
        assert replies[-1] == rest_reply(base, '/chat', p, s)['content'], p  # nothing mixed in


def test_malformed_and_wrongly_typed_bodies_get_422_naming_the_field(base):
    status, rest = raw_post(base, '/chat', b'{"message": "hi", ')
    assert status == 422 and b'JSON' in rest
    status, rest = raw_post(base, '/chat/stream', json.dumps({'message': 5, 'settings': {'maxResponseTokens': 'many'}}).encode())
    assert status == 422 and b'message' in rest and b'settings.maxResponseTokens' in rest
    status, rest = raw_post(base, '/text', b'[]')
    assert status == 422
    status, rest = raw_post(base, '/chat', json.dumps({'message': 'hi', 'history': [{'role': 'narrator', 'content': 'x'}]}).encode())
    assert status == 422 and b'history.0.role' in rest
    assert httpx.get(base + '/health').json()['status'] == 'ready'  # and the server is fine


def test_escaped_non_ascii_input_and_any_case_roles(base):
    history = [{'role': 'System', 'content': '用中文回答'}, {'role': 'USER', 'content': '你好 😀'}, {'role': 'Assistant', 'content': '你好！'}]
    r = httpx.post(base + '/chat', content=body('再见', {'temperature': 0, 'maxResponseTokens': 10}, history), headers={'Content-Type': 'application/json'})
    assert r.status_code == 200 and r.json()['isError'] is False and r.json()['content']


def test_health_answers_while_streams_run(base):
    idle(base)
    threads = [threading.Thread(target=app_stream, args=(base, '/chat/stream', body('x', {'temperature': 0, 'maxResponseTokens': 400}))) for _ in range(2)]
    for t in threads: t.start()
    while httpx.get(base + '/health').json()['streams'] < 2: time.sleep(0.01)
    worst = 0
    with httpx.Client() as c:
        for _ in range(20):
            t0 = time.perf_counter(); h = c.get(base + '/health').json(); worst = max(worst, time.perf_counter() - t0)
    assert h['status'] == 'ready' and h['streams'] >= 1
    cancel(base)
    for t in threads: t.join(60)
    assert worst < 1.0, worst  # generous: a functional check; the benchmark reports the real p99


def test_rest_client_that_disconnects_stops_its_generation(base):
    idle(base)
    s = send_request(base, '/chat', body('never mind', {'temperature': 0, 'maxResponseTokens': 1800}))
    while httpx.get(base + '/health').json()['waiting'] == 0: time.sleep(0.01)
    s.close()
    t0 = time.perf_counter()
    idle(base, timeout=5)
    assert time.perf_counter() - t0 < 1.5  # 1800 tokens would take seconds


def test_requests_wait_their_turn_in_arrival_order(base):
    idle(base)
    finished = []
    def run(i):
        replies, done = app_stream(base, '/chat/stream', body(f'request {i}', {'temperature': 0, 'maxResponseTokens': 150}))
        assert done
        finished.append(i)
    threads = []
    for i in range(4):
        threads.append(threading.Thread(target=run, args=(i,))); threads[-1].start()
        deadline = time.time() + 5  # the next request is sent once this one is queued or running
        while httpx.get(base + '/health').json()['waiting'] < i + 1 - len(finished): assert time.time() < deadline; time.sleep(0.005)
    for t in threads: t.join(60)
    assert finished == [0, 1, 2, 3]


def embed(base, text: str, content_type='text/plain; charset=utf-8') -> httpx.Response:
    "An embedding request as the app's knowledge base sends it: the raw text as a UTF-8 text/plain body."
    return httpx.post(base + '/embedding', content=text.encode('utf-8'), headers={'Content-Type': content_type}, timeout=120)


def test_embedding_rest_as_the_knowledge_base_calls_it(base):
    assert httpx.get(base + '/health').json()['embedding']['status'] == 'idle'  # loaded at the first request only
    texts = ['How do I reset my password?', 'Steps to change the password of an account.', '今天天气很好，我们去公园散步。']
    vectors = []
    for t in texts:
        r = embed(base, t)
        assert r.status_code == 200 and r.headers['content-type'] == 'application/json', r.text
        assert set(r.json()) == {'embedding'}
        vectors.append(r.json()['embedding'])
    assert all(len(v) == 2433 and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)  # the default mode, hybrid
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert cos(vectors[0], vectors[1]) > 0.7 > cos(vectors[0], vectors[2]), (cos(vectors[0], vectors[1]), cos(vectors[0], vectors[2]))  # the app's threshold
    assert embed(base, texts[0]).json()['embedding'] == vectors[0]  # the same text, the same vector
    assert httpx.get(base + '/health').json()['embedding'] == {'status': 'ready', 'model': 'hybrid: all-MiniLM-L6-v2 + lexical',
                                                               'dimensions': 2433, 'error': None}


def test_embedding_refusals_are_statuses_and_the_next_request_is_served(base):
    r = embed(base, '   ')
    assert r.status_code == 400 and 'empty' in r.json()['error']
    r = httpx.post(base + '/embedding', content=b'\xc3\x28 broken utf-8', headers={'Content-Type': 'text/plain; charset=utf-8'})
    assert r.status_code == 400 and 'not utf-8 text' in r.json()['error']
    r = embed(base, 'x' * 200_001)
    assert r.status_code == 413
    assert embed(base, 'still served').status_code == 200
