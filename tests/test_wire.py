"""The connector as Fantasy Copilot meets it: a real `python -m fc_chatglm --demo` process, spoken to on
raw sockets with hand-written HTTP/1.1 and read line by line the way the app reads (nbs/protocol.md): full
replies sent chunked with no Content-Length as its HttpClient sends them, each stream read the way its
skill reads it (the chat skill replaces the reply with each line, the text skill appends each line)."""
import json
import re
import socket
import threading
import time

import httpx
import psutil
import pytest

from fc_chatglm.testing import app_stream, ready_connector, start_connector, wait_ready

LONG = {'temperature': 0, 'maxResponseTokens': 1500}
KNOWLEDGE = {'temperature': 0, 'maxResponseTokens': 400, 'topP': 0, 'frequencyPenalty': 1, 'presencePenalty': 1}  # its answers
QUICK_CHAT = {'temperature': 0, 'maxResponseTokens': 600, 'topP': 0, 'frequencyPenalty': 1, 'presencePenalty': 1}  # the dialog


@pytest.fixture(scope='module')
def base():
    with ready_connector('--demo') as url: yield url


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


def app_rest(base, path, data: bytes) -> dict:
    """A full-reply request as the app's HttpClient sends it (JsonContent: `Transfer-Encoding: chunked`, no
    Content-Length), read as it reads it: EnsureSuccessStatusCode, then `{"content", "isError"}`."""
    r = httpx.post(base + path, content=iter([data]), headers={'Content-Type': 'application/json; charset=utf-8'}, timeout=100)
    assert r.request.headers['transfer-encoding'] == 'chunked' and 'content-length' not in r.request.headers
    assert r.status_code == 200, r.text  # any other status is a generic failure in the app
    assert set(r.json()) == {'content', 'isError'}, r.json()
    return r.json()


def rest_reply(base, path, message, settings, history=None):
    return app_rest(base, path, body(message, settings, history))


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
    replies, done = app_stream(base, '/text/stream', body('Once upon a time', s))  # appended, as the text skill does
    assert done and replies[-1].strip() == rest_reply(base, '/text', 'Once upon a time', s)['content']  # the app trims it


def test_text_stream_lines_hold_only_new_text(base):
    s = {'temperature': 0, 'maxResponseTokens': 80}
    status, payload = raw_post(base, '/text/stream', body('你好', s))
    chunks = dechunk(payload)
    assert status == 200 and chunks[-1] == b'[DONE]\n'
    assert all(c.endswith(b'\n') and c.count(b'\n') == 1 and c.isascii() for c in chunks)  # one whole line per chunk
    pieces = [json.loads(c)['content'] for c in chunks if c.startswith(b'{')]
    assert len(pieces) > 1 and not any('\ufffd' in p for p in pieces)
    reply = rest_reply(base, '/text', '你好', s)['content']
    assert ''.join(pieces).strip() == reply  # together the lines make the reply
    replaced, done = app_stream(base, '/text/stream', body('你好', s), append=False)  # read as the chat skill would
    assert done and len(replaced) > 1 and len(replaced[-1]) < len(reply)  # each line alone is only the last piece


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
    assert replies[-1].strip() == rest_reply(base, '/text', 'a long text', {'temperature': 0, 'maxResponseTokens': 300})['content']


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


def test_malformed_and_wrongly_typed_bodies_are_refused_in_a_form_the_app_shows(base):
    refusals = [(b'{"message": "hi", ', 'JSON'), (b'[]', 'Invalid request'), (b'', 'Invalid request'),
                (json.dumps({'message': 5, 'settings': {'maxResponseTokens': 'many'}}).encode(), 'settings.maxResponseTokens'),
                (json.dumps({'message': 'hi', 'history': [{'role': 'narrator', 'content': 'x'}]}).encode(), 'history.0.role')]
    for data, says in refusals:
        feature = ['chat'] if 'history' in says else ['chat', 'text']  # a text request has no history
        for path in [f'/{f}/stream' for f in feature]:
            shown, done = app_stream(base, path, data)  # a stream the app reads to [DONE]: one readable line
            assert done and len(shown) == 1 and says in shown[0], (path, shown)
        for path in [f'/{f}' for f in feature]:
            r = app_rest(base, path, data)  # a 200 whose content the app shows as the error
            assert r['isError'] and says in r['content'], (path, r)
    assert httpx.get(base + '/health').json()['status'] == 'ready'  # and the server is fine


def test_out_of_range_settings_reaching_the_server_are_answered(base):
    "Issue 15's probes: maxResponseTokens 1e30 and temperature 1e-300, as a client may send them."
    huge = json.dumps({'message': 'hi', 'settings': {'maxResponseTokens': 1e30}}).encode()
    shown, done = app_stream(base, '/chat/stream', huge)
    assert done and len(shown) == 1 and 'maxResponseTokens' in shown[0], shown
    r = app_rest(base, '/chat', huge)
    assert r['isError'] and 'maxResponseTokens' in r['content'], r
    tiny = {'temperature': 1e-300, 'maxResponseTokens': 20}
    greedy = rest_reply(base, '/chat', 'hi', {'temperature': 0, 'maxResponseTokens': 20})
    r = rest_reply(base, '/chat', 'hi', tiny)
    assert r == greedy or (r['isError'] and r['content']), r  # greedy, or refused with a reason: never an empty reply
    shown, done = app_stream(base, '/chat/stream', body('hi', tiny))
    assert done and shown and shown[-1], shown
    assert rest_reply(base, '/chat', 'hi', {'temperature': 0, 'maxResponseTokens': 20}) == greedy  # nothing left behind


def test_both_role_casings_with_the_knowledge_base_and_quick_chat_settings(base):
    idle(base)
    turns = [('system', '用中文回答'), ('user', '你好 😀'), ('assistant', '你好！')]
    titled = [{'role': r.title(), 'content': c} for r, c in turns]  # v1.2307.x
    lower = [{'role': r, 'content': c} for r, c in turns]  # v1.2308.1.0 on
    streamed, done = app_stream(base, '/chat/stream', body('长城有多长？', KNOWLEDGE, titled))
    full = rest_reply(base, '/chat', '长城有多长？', KNOWLEDGE, lower)
    assert done and not full['isError'] and streamed[-1] == full['content']  # the same prompt whatever the casing
    quick = rest_reply(base, '/chat', 'Translate: good morning', QUICK_CHAT, titled[:1])
    assert not quick['isError'] and quick['content']


def test_escaped_non_ascii_input_and_any_case_roles(base):
    history = [{'role': 'System', 'content': '用中文回答'}, {'role': 'USER', 'content': '你好 😀'}, {'role': 'Assistant', 'content': '你好！'}]
    r = rest_reply(base, '/chat', '再见', {'temperature': 0, 'maxResponseTokens': 10}, history)
    assert r['isError'] is False and r['content']


def test_text_stream_cancelled_by_the_post_and_by_closing_the_socket(base):
    idle(base)
    seen = []
    def on_line(reply, sock):
        seen.append(reply)
        if len(seen) == 3: cancel(base, 'text')
    shown, done = app_stream(base, '/text/stream', body('tell me everything', LONG), on_line)
    assert done and len(shown) < 100
    idle(base)
    s = send_request(base, '/text/stream', body('never mind', LONG))
    got = b''
    while got.count(b'\n{') < 3: got += s.recv(4096)
    s.close()  # the app's usual cancel: nothing else is sent
    idle(base, timeout=5)
    r = rest_reply(base, '/text', 'hi', {'temperature': 0, 'maxResponseTokens': 5})
    assert not r['isError']


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
        replies, done = app_stream(base, '/chat/stream', body(f'request {i}', {'temperature': 0, 'maxResponseTokens': 150}), timeout=120)
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
    assert all(len(v) == 2561 and abs(sum(x * x for x in v) - 1) < 1e-4 for v in vectors)  # the default mode, multilingual
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))
    assert cos(vectors[0], vectors[1]) > 0.7 > cos(vectors[0], vectors[2]), (cos(vectors[0], vectors[1]), cos(vectors[0], vectors[2]))  # the app's threshold
    assert embed(base, texts[0]).json()['embedding'] == vectors[0]  # the same text, the same vector
    health = httpx.get(base + '/health').json()['embedding']
    assert {k: health[k] for k in ('status', 'mode', 'model', 'dimensions', 'error')} == {
        'status': 'ready', 'mode': 'multilingual', 'model': 'multilingual: USE multilingual v3, centred + lexical', 'dimensions': 2561, 'error': None}
    assert health['queue'] == {'waiting': 0, 'characters': 0, 'pace': health['queue']['pace']}, health


def test_embedding_refusals_are_statuses_and_the_next_request_is_served(base):
    r = embed(base, '   ')
    assert r.status_code == 400 and 'empty' in r.json()['error']
    r = httpx.post(base + '/embedding', content=b'\xc3\x28 broken utf-8', headers={'Content-Type': 'text/plain; charset=utf-8'})
    assert r.status_code == 400 and 'not utf-8 text' in r.json()['error']
    r = embed(base, 'x' * 200_001)
    assert r.status_code == 413
    assert embed(base, 'still served').status_code == 200


def test_embedding_charsets_and_health_while_a_large_body_is_read(base):
    assert embed(base, 'warm up').status_code == 200
    t0 = time.perf_counter()
    r = httpx.post(base + '/embedding', content=b'a' * 800_000, headers={'Content-Type': 'text/plain; charset=punycode'})
    refused_in = time.perf_counter() - t0
    assert r.status_code == 415 and 'UTF-8' in r.json()['error'] and 'GB18030' in r.json()['error'], r.text
    assert refused_in < 5, refused_in  # it made /health wait 10 s when it was decoded on the event loop
    for charset, data in [('GB18030', '知识库'.encode('gb18030')), ('Big5', '知識庫'.encode('big5')),
                          ('utf-16', '知识库'.encode('utf-16')), ('ISO-8859-1', 'café'.encode('latin-1'))]:
        assert embed_bytes(base, data, f'text/plain; charset={charset}').status_code == 200, charset
    big = ('长城是中国古代的军事防御工程。' * 2_000).encode('gb18030')  # 30,000 characters, 60 KB
    got = []
    t = threading.Thread(target=lambda: got.append(embed_bytes(base, big, 'text/plain; charset=gb18030')))
    t.start()
    worst = 0
    with httpx.Client() as c:
        while t.is_alive():
            t0 = time.perf_counter(); assert c.get(base + '/health').status_code == 200
            worst = max(worst, time.perf_counter() - t0); time.sleep(0.01)
    t.join()
    assert got[0].status_code == 200 and worst < 1.0, (got[0].status_code, worst)  # generous: the loop was never held


def embed_bytes(base, data: bytes, content_type: str) -> httpx.Response:
    return httpx.post(base + '/embedding', content=data, headers={'Content-Type': content_type}, timeout=120)


@pytest.fixture(scope='module')
def tight(tmp_path_factory):
    "A demo connector with small limits: 20 KB bodies, 5 history entries, 2 replies queued, 1 s per full reply."
    log_file = tmp_path_factory.mktemp('tight') / 'stderr.log'
    proc, url = start_connector('--demo', '--embedding', 'off', '--max-request-bytes', '20000', '--max-history', '5',
                                '--max-queue', '2', '--reply-seconds', '1', log=log_file)
    try:
        wait_ready(url, proc=proc)
        yield url, proc, log_file
    finally:
        proc.kill(); proc.wait()


def send_chunked(base, path: str, total: int, piece: int = 65536) -> tuple[int, bytes]:
    """POST `total` bytes of JSON-ish body chunked with no Content-Length, as HttpClient sends a body, until the server
    stops reading; return how many bytes went out and the raw response."""
    host, port = base.removeprefix('http://').split(':')
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f'POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json; charset=utf-8\r\n'
                  'Transfer-Encoding: chunked\r\n\r\n'.encode())
        chunk, sent = f'{piece:x}\r\n'.encode() + b' ' * piece + b'\r\n', 0
        try:
            while sent < total: s.sendall(chunk); sent += piece
            s.sendall(b'0\r\n\r\n')
        except OSError: pass  # the server answered and closed without reading the rest
        raw = b''
        try:
            while data := s.recv(65536): raw += data
        except OSError: pass
    return sent, raw


def test_a_body_past_the_cap_is_refused_unread_in_the_routes_form(tight):
    base, proc, _ = tight
    rss = psutil.Process(proc.pid).memory_info().rss
    sent, raw = send_chunked(base, '/chat', 50_000_000)  # 50 MB, no Content-Length
    head, _, payload = raw.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 200') and b'connection: close' in head.lower(), head
    r = json.loads(payload)
    assert r['isError'] and 'over 20,000 bytes' in r['content'] and 'max_request_bytes' in r['content'], r
    assert sent < 50_000_000  # the connection closed long before the end
    grew = psutil.Process(proc.pid).memory_info().rss - rss
    assert grew < 50_000_000, grew  # generous: nothing like the body was held
    sent, raw = send_chunked(base, '/text/stream', 50_000_000)
    lines = raw.partition(b'\r\n\r\n')[2].splitlines()
    assert lines[-1] == b'[DONE]' and b'over 20,000 bytes' in lines[0], lines
    host, port = base.removeprefix('http://').split(':')
    with socket.create_connection((host, int(port)), timeout=10) as s:  # a declared length of 10^12 and no body: refused at once
        s.sendall(f'POST /chat/stream HTTP/1.1\r\nHost: {base}\r\nContent-Type: application/json\r\n'
                  f'Content-Length: {10**12}\r\n\r\n'.encode())
        raw = b''
        while data := s.recv(65536): raw += data
    assert raw.endswith(b'[DONE]\n') and b'over 20,000 bytes' in raw, raw
    assert rest_reply(base, '/chat', 'hi', {'temperature': 0, 'maxResponseTokens': 5})['isError'] is False  # served again


def test_history_past_the_cap_is_refused(tight):
    base, _, _ = tight
    history = [{'role': 'user', 'content': 'x'}, {'role': 'assistant', 'content': 'y'}] * 3
    r = rest_reply(base, '/chat', 'hi', {}, history)
    assert r['isError'] and 'holds 6 messages, more than the 5' in r['content'], r
    shown, done = app_stream(base, '/chat/stream', body('hi', {}, history))
    assert done and len(shown) == 1 and 'max_history' in shown[0]
    assert not rest_reply(base, '/chat', 'hi', {'maxResponseTokens': 5}, history[:5])['isError']


def test_past_the_queue_a_request_is_told_at_once_that_the_connector_is_busy(tight):
    base, _, _ = tight
    idle(base)
    streams = [threading.Thread(target=app_stream, args=(base, '/chat/stream', body(f'long {i}', LONG))) for i in range(2)]
    for t in streams: t.start()
    deadline = time.time() + 10
    while httpx.get(base + '/health').json()['waiting'] < 2: assert time.time() < deadline; time.sleep(0.01)
    t0 = time.perf_counter()
    r = rest_reply(base, '/chat', 'one more', {'maxResponseTokens': 5})
    shown, done = app_stream(base, '/text/stream', body('one more', {'maxResponseTokens': 5}))
    told_in = time.perf_counter() - t0
    cancel(base)
    for t in streams: t.join(60)
    assert r['isError'] and 'busy' in r['content'] and 'max_queue' in r['content'], r
    assert done and len(shown) == 1 and 'busy' in shown[0], shown
    assert told_in < 5, told_in  # at once, not after the queue (generous)
    idle(base)
    assert not rest_reply(base, '/chat', 'now', {'maxResponseTokens': 5})['isError']


def test_a_hundred_requests_at_once_are_served_or_told_at_once_that_it_is_busy(tight):
    "Issue 15's flood: 100 concurrent requests all queued and nothing said busy."
    base, _, _ = tight
    idle(base)
    answers = []
    def one(i):
        t0 = time.perf_counter()
        r = rest_reply(base, '/chat', f'question {i}', {'temperature': 0, 'maxResponseTokens': 200})
        answers.append((r, time.perf_counter() - t0))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads: t.start()
    for t in threads: t.join(120)
    busy = [s for r, s in answers if r['isError'] and 'busy' in r['content']]
    served = [r for r, _ in answers if not r['isError']]
    assert len(busy) + len(served) == 100 and len(busy) >= 50 and served, (len(busy), len(served))
    assert max(busy) < 20, max(busy)  # told at once, not after a queue of 100 replies (generous)
    idle(base)


def test_a_full_reply_ends_in_time_with_the_text_so_far(tight):
    base, _, log_file = tight
    idle(base)
    t0 = time.perf_counter()
    r = rest_reply(base, '/chat', 'tell me everything', LONG)  # 1,500 tokens: far more than 1 s on the demo
    took = time.perf_counter() - t0
    assert r['isError'] is False and r['content'], r
    assert took < 30, took  # generous; the full reply would take many seconds
    time.sleep(0.2)
    said = log_file.read_text(encoding='ascii')
    assert re.search(r'chat: stopped at the 1 s allowed for a full reply \(reply_seconds in config.json.*after \d+ tokens', said), said[-2000:]
    shown, done = app_stream(base, '/chat/stream', body('a stream has no limit', {'temperature': 0, 'maxResponseTokens': 5}))
    assert done and shown
