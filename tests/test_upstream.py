"""The upstream engine (nbs/07c_upstream.ipynb) against real servers on loopback: a `--demo` connector's own `/v1` as the
upstream of a second connector (the app's protocol end to end through two processes), `llm-katan`'s echo server with its
failures injected, and a scripted server that breaks its stream off or sends malformed events."""
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from fc_chatglm.launch import PROJECT
from fc_chatglm.schemas import ChatRequest
from fc_chatglm.testing import app_stream, ready_connector
from fc_chatglm.upstream import Upstream, UpstreamEngine

KATAN_KEY = 'katan-key'  # llm-katan asks every request for an Authorization header
LONG = {'temperature': 1, 'maxResponseTokens': 1500}
GREEDY = {'temperature': 0, 'maxResponseTokens': 12}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def folder(path: Path, **config) -> Path:
    "A connector folder: the project's manifest, and a config.json with `config` (embeddings off: none is loaded)."
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / 'connector.json', path / 'connector.json')
    (path / 'config.json').write_text(json.dumps({'embedding': 'off', **config}), encoding='utf-8')
    return path


def body(message: str, settings: dict, history=()) -> bytes:
    return json.dumps({'message': message, 'history': list(history), 'settings': settings}).encode()


def post(base: str, path: str, data: bytes) -> dict:
    r = httpx.post(base + path, content=data, headers={'Content-Type': 'application/json'}, timeout=60)
    assert r.status_code == 200, r.text  # the app's refusal forms are all 200s
    return r.json()


def idle(base: str, seconds: float = 10) -> dict:
    "/health once nothing runs or waits (or after `seconds`)."
    deadline = time.time() + seconds
    while (h := httpx.get(base + '/health').json())['waiting'] and time.time() < deadline: time.sleep(0.05)
    return h


def cancel(base: str, feature: str = 'chat') -> dict:
    "The app's cancel: a POST with no body and no content type (and the whole base URL as its Host, as the app sends it)."
    with socket.create_connection(('127.0.0.1', int(base.rsplit(':', 1)[1])), timeout=30) as s:
        s.sendall(f'POST /{feature}/stream/cancel HTTP/1.1\r\nHost: {base}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'.encode())
        raw = b''
        while chunk := s.recv(65536): raw += chunk
    head, _, rest = raw.partition(b'\r\n\r\n')
    assert head.split()[1] == b'200', raw
    return json.loads(rest)


# ---------------------------------------------------------------- two connectors: the demo model's /v1 as the upstream
@pytest.fixture(scope='module')
def pair(tmp_path_factory):
    "A `--demo` connector (A), and a connector (B) whose upstream is A's /v1; yields (A, B)."
    with ready_connector('--demo') as a:
        with ready_connector('--upstream', a + '/v1', cwd=folder(tmp_path_factory.mktemp('b'))) as b: yield a, b


HISTORY = [{'role': 'System', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]


def test_b_serves_the_demo_model_without_loading_one(pair):
    a, b = pair
    deadline = time.time() + 10  # ready at once; the upstream is asked for its models in the background
    while (h := httpx.get(b + '/health').json())['upstream']['state'] != 'ok': assert time.time() < deadline, h; time.sleep(0.2)
    assert h['status'] == 'ready' and h['model'].startswith('demo (upstream ') and h['decode'] is None
    assert h['upstream'] == {**h['upstream'], 'url': a + '/v1', 'model': 'demo', 'running': 0}
    window = httpx.get(a + '/v1/models').json()['data'][0]['max_model_len']
    assert window == 2048 and h['upstream']['context'] == window  # learned from A's /v1/models, as from vLLM's


def test_chat_rest_and_stream_through_two_processes(pair):
    a, b = pair
    direct = post(a, '/chat', body('你好', GREEDY, HISTORY))
    through = post(b, '/chat', body('你好', GREEDY, HISTORY))
    assert through == direct and direct['content'] and not direct['isError']
    replies, done = app_stream(b, '/chat/stream', body('你好', GREEDY, HISTORY))
    assert done and replies[-1] == direct['content']
    assert all(direct['content'].startswith(r) for r in replies)  # chat: the whole reply so far on every line


def test_text_completion_through_two_processes(pair):
    a, b = pair
    transcript = '<|system|>: Be brief.\n\n<|user|>: Hi\n\n<|assistant|>: Hello!\n\n<|user|>: 你好\n\n<|assistant|>: '
    data = json.dumps({'message': transcript, 'settings': GREEDY}).encode()
    direct, through = post(a, '/text', data), post(b, '/text', data)
    assert through == direct and direct['content']
    assert post(b, '/chat', body('你好', GREEDY, HISTORY)) == through  # the transcript is read back as the same conversation
    pieces, done = app_stream(b, '/text/stream', data)
    assert done and pieces[-1].strip() == direct['content']  # text completion: new text on every line, appended


def test_cancel_and_disconnect_stop_the_upstreams_generation(pair):
    a, b = pair
    for _ in range(8):  # the demo's random reply sometimes ends on its own within three lines: then the cancel finds nothing
        seen, answers = [], []
        def on_line(reply, sock):
            seen.append(reply)
            if len(seen) == 3: answers.append(cancel(b))
        replies, done = app_stream(b, '/chat/stream', body('tell me everything', LONG), on_line)
        assert done and len(replies) < 100  # far from 1500 tokens
        if answers == [{'cancelled': 1}]: break
        assert answers in ([], [{'cancelled': 0}]), answers  # nothing to cancel: the reply had ended
        idle(a, 5)
    assert answers == [{'cancelled': 1}], 'eight replies in a row ended before their third line'
    assert idle(a, 5)['waiting'] == 0  # B closed its request, and A stopped generating
    cut = []
    def hang_up(reply, sock):
        cut.append(reply)
        if len(cut) == 3: sock.close(); raise ConnectionAbortedError  # the app's usual cancel: the socket closes
    with pytest.raises(OSError): app_stream(b, '/chat/stream', body('tell me everything', LONG), hang_up)
    assert idle(b, 5)['waiting'] == 0 and idle(a, 5)['waiting'] == 0
    assert post(b, '/chat', body('你好', GREEDY)) == post(a, '/chat', body('你好', GREEDY))  # the next request is whole


def test_openai_clients_reach_the_upstream_through_b(pair):
    a, b = pair
    with openai.OpenAI(base_url=b + '/v1', api_key='unused', max_retries=0) as client:
        assert [m.id for m in client.models.list()][0] == 'demo'
        msgs = [{'role': 'user', 'content': '你好'}]
        r = client.chat.completions.create(model='demo', messages=msgs, max_tokens=7, temperature=0)
        direct = httpx.post(a + '/v1/chat/completions', json={'model': 'demo', 'messages': msgs, 'max_tokens': 7, 'temperature': 0}).json()
        assert r.choices[0].message.content == direct['choices'][0]['message']['content']
        text = ''.join(c.choices[0].delta.content or '' for c in client.chat.completions.create(
            model='demo', messages=msgs, max_tokens=7, temperature=0, stream=True) if c.choices)
        assert text == r.choices[0].message.content


def test_seed_and_stop_reach_the_upstream(pair):
    a, b = pair
    def ask(url: str, **kw) -> dict:
        r = httpx.post(url + '/v1/chat/completions', json={'model': 'demo', 'messages': [{'role': 'user', 'content': '你好'}],
                                                           'max_tokens': 12, 'temperature': 1, **kw}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()
    content = lambda r: r['choices'][0]['message']['content']
    direct = content(ask(a, seed=7))
    assert content(ask(b, seed=7)) == direct  # A sampled with B's client's seed
    assert len({content(ask(b, seed=s)) for s in range(4)}) > 1  # and other seeds give other replies
    stop = direct[2:4]
    cut_by_a, through = ask(a, seed=7, stop=[stop]), ask(b, seed=7, stop=stop)
    assert content(through) == content(cut_by_a) == direct[:direct.find(stop)].strip()
    assert through['choices'][0]['finish_reason'] == 'stop'
    # A stopped by itself and sent its usage (B cutting the stream would leave no usage from A: 0 prompt tokens)
    assert through['usage'] == cut_by_a['usage'] and through['usage']['prompt_tokens'] > 0


ADD = {'type': 'function', 'function': {'name': 'add', 'description': 'Add two integers', 'parameters': {
    'type': 'object', 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'integer'}}, 'required': ['a', 'b'], 'additionalProperties': False}}}


def test_tools_and_response_format_reach_the_upstream_and_its_calls_come_back(pair):
    "B sends tools, tool_choice and response_format to A as they came, and relays A's calls, whole and streamed; A constrains."
    a, b = pair
    ask = {'model': 'demo', 'messages': [{'role': 'user', 'content': '你好'}], 'tools': [ADD], 'tool_choice': 'required', 'seed': 2,
           'temperature': 1, 'max_tokens': 400}
    post_ = lambda url, **kw: httpx.post(url + '/v1/chat/completions', json={**ask, **kw}, timeout=120).json()
    direct, through = post_(a), post_(b)
    assert through['choices'][0]['finish_reason'] == direct['choices'][0]['finish_reason'] == 'tool_calls'
    called = through['choices'][0]['message']
    assert called['content'] is None and called['tool_calls'][0]['id'].startswith('call_')
    assert [c['function'] for c in called['tool_calls']] == [c['function'] for c in direct['choices'][0]['message']['tool_calls']]
    with openai.OpenAI(base_url=b + '/v1', api_key='unused', max_retries=0) as client:
        with client.chat.completions.stream(**ask) as s:
            for _ in s: pass
            final = s.get_final_completion()
        assert final.choices[0].finish_reason == 'tool_calls'
        assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == [
            (c['function']['name'], c['function']['arguments']) for c in called['tool_calls']]
        back = client.chat.completions.create(model='demo', seed=2, max_tokens=5, tools=[ADD], messages=ask['messages'] + [  # the result, through B
            called, {'role': 'tool', 'tool_call_id': called['tool_calls'][0]['id'], 'content': '3'}])
        assert back.choices[0].finish_reason in ('stop', 'length', 'tool_calls')
        person = {'type': 'json_schema', 'json_schema': {'name': 'p', 'strict': True, 'schema': {
            'type': 'object', 'properties': {'age': {'type': 'integer'}}, 'required': ['age'], 'additionalProperties': False}}}
        r = client.chat.completions.create(model='demo', messages=ask['messages'], seed=1, max_tokens=60, response_format=person)
        assert list(json.loads(r.choices[0].message.content)) == ['age']
    bad = httpx.post(b + '/v1/chat/completions', json={**ask, 'response_format': {'type': 'json_schema', 'json_schema': {
        'name': 'x', 'schema': {'type': 'object', 'if': {'required': ['a']}}}}, 'tool_choice': 'none'}, timeout=60)
    assert bad.status_code in (400, 502) and '"if"' in bad.json()['error']['message']  # A's refusal, in B's words


def test_b_runs_requests_side_by_side(pair):
    a, b = pair
    results = []
    def ask(): results.append(post(b, '/chat', body('你好', GREEDY)))
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert len(results) == 4 and len({r['content'] for r in results}) == 1 and not results[0]['isError']


# ---------------------------------------------------------------- llm-katan's echo server, with failures injected
@contextmanager
def katan(*options: str):
    "`llm-katan --backend echo` on a free loopback port, with `options`; yields its /v1 URL."
    port = free_port()
    cmd = [sys.executable, '-c', 'from llm_katan.cli import main; main()', '--model', 'echo', '--backend', 'echo',
           '--host', '127.0.0.1', '--port', str(port), '--disable-dashboard', '--log-level', 'warning', *options]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as p:
        try:
            url, deadline = f'http://127.0.0.1:{port}/v1', time.time() + 60
            while True:
                assert p.poll() is None and time.time() < deadline, 'llm-katan did not start'
                try:
                    if httpx.get(url + '/models', headers={'Authorization': f'Bearer {KATAN_KEY}'}).status_code: break
                except httpx.TransportError: time.sleep(0.2)
            yield url
        finally: p.kill()


@contextmanager
def behind(tmp_path: Path, upstream: str, key: str | None = KATAN_KEY, **config):
    "A connector whose upstream is `upstream`; yields its base URL."
    cfg = {'upstream': upstream, 'upstream_api_key': key, **config}
    with ready_connector(cwd=folder(tmp_path / 'connector', **cfg)) as base: yield base


def refused(base: str, message: str = 'Hello') -> tuple[dict, list[str]]:
    "A chat-rest reply and a chat-stream's raw lines, for a request the upstream fails."
    full = post(base, '/chat', body(message, GREEDY))
    with socket.create_connection(('127.0.0.1', int(base.rsplit(':', 1)[1])), timeout=30) as s:
        data = body(message, GREEDY)
        s.sendall(f'POST /chat/stream HTTP/1.1\r\nHost: {base}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n'.encode() + data)
        raw = b''
        while b'[DONE]' not in raw and (chunk := s.recv(65536)): raw += chunk
    lines = [l for l in raw.decode().splitlines() if l.startswith('{') or l == '[DONE]']
    return full, lines


def test_katan_echo_shows_the_mapping(tmp_path):
    with katan() as url, behind(tmp_path, url) as base:
        r = post(base, '/chat', body('What now?', {'temperature': 0.4, 'maxResponseTokens': 300}, HISTORY))
        assert not r['isError'] and 'model=echo' in r['content'] and 'messages=4' in r['content']
        assert 'max_tokens=300 temperature=0.4' in r['content'] and r['content'].endswith('User: What now?')
        replies, done = app_stream(base, '/chat/stream', body('What now?', GREEDY))
        assert done and replies[-1].endswith('User: What now?') and all(replies[-1].startswith(x) for x in replies)
        pieces, done = app_stream(base, '/text/stream', json.dumps({'message': 'Once upon a time'}).encode())
        assert done and pieces[-1].endswith('User: Once upon a time')
        h = httpx.get(base + '/health').json()['upstream']
        assert h['state'] == 'ok' and h['model'] == 'echo'


def test_the_connection_to_the_upstream_is_kept_for_the_next_request():
    "A stream read to its [DONE] gives its connection back: the next requests go out on it, not each on a new one."
    with katan() as url:
        port = int(url.rsplit(':', 1)[1].split('/')[0])
        engine = UpstreamEngine(Upstream(url, 'echo', api_key=KATAN_KEY))
        try:
            used = set()  # this process's local ports of its connections to llm-katan
            for message in ('one', 'two', 'three'):
                out = engine.generate(ChatRequest(message=message))
                assert out.reason == 'stop' and out.text.endswith(f'User: {message}'), out
                me = psutil.Process()
                open_now = (me.net_connections if hasattr(me, 'net_connections') else me.connections)('tcp')  # psutil < 6: connections
                used |= {c.laddr.port for c in open_now if c.raddr and c.raddr.port == port}
            assert len(used) == 1, f'connections left open after the requests: {used} (one, kept for the next, is right)'
        finally: engine.close()


def test_a_wrong_key_is_named(tmp_path):
    with katan('--validate-keys', '--api-keys', 'openai=right') as url, behind(tmp_path, url, key='wrong') as base:
        full, lines = refused(base)
        assert full['isError'] and 'upstream_api_key' in full['content'] and '401' in full['content']
        assert lines[-1] == '[DONE]' and 'upstream_api_key' in json.loads(lines[0])['content']
        assert httpx.get(base + '/health').json()['upstream']['state'] == 'refused'


@pytest.mark.parametrize('options, words, status', [
    (('--rate-limit-after', '1'), 'busy and refused the request (429', 429),
    (('--timeout-after', '1'), 'not answering now (504', 503),
    (('--error-rate', '1.0'), 'failed (500', 502),
])
def test_katan_failures_are_readable_and_harm_nothing(tmp_path, options, words, status):
    with katan(*options) as url, behind(tmp_path, url) as base:
        if options[0] != '--error-rate': assert not post(base, '/chat', body('first', GREEDY))['isError']  # the one allowed
        for _ in range(2):  # a failure, then another: each answered in full, nothing left running
            full, lines = refused(base)
            assert full['isError'] and words in full['content'], full
            assert len(lines) == 2 and lines[-1] == '[DONE]' and words in json.loads(lines[0])['content'], lines
        v1 = httpx.post(base + '/v1/chat/completions', json={'model': 'echo', 'messages': [{'role': 'user', 'content': 'hi'}]}, timeout=30)
        assert v1.status_code == status and words in v1.json()['error']['message'], v1.text  # an OpenAI client's view: a gateway's status
        assert idle(base)['waiting'] == 0 and httpx.get(base + '/health').json()['status'] == 'ready'


def test_slow_upstream_latency_and_silence(tmp_path):
    with katan('--latency-ms', '300') as url, behind(tmp_path, url) as base:
        t0 = time.perf_counter()
        r = post(base, '/chat', body('slow but fine', GREEDY))
        assert not r['isError'] and r['content'].endswith('User: slow but fine') and time.perf_counter() - t0 >= 0.3
    with katan('--ttft-ms', '3000') as url, behind(tmp_path, url, upstream_timeout=0.5) as base:
        full, lines = refused(base)
        assert full['isError'] and 'sent nothing for 0.5 s' in full['content'] and 'upstream_timeout' in full['content'], full


def test_chunk_delay_streams_piece_by_piece(tmp_path):
    with katan('--chunk-delay-ms', '20') as url, behind(tmp_path, url) as base:
        replies, done = app_stream(base, '/chat/stream', body('x' * 200, GREEDY))
        assert done and len(replies) > 5 and replies[-1].endswith('x' * 200)  # many lines, not one at the end


def test_an_upstream_that_is_not_there(tmp_path):
    with behind(tmp_path, f'http://127.0.0.1:{free_port()}') as base:
        full, lines = refused(base)
        assert full['isError'] and 'Cannot reach the upstream server' in full['content']
        assert lines[-1] == '[DONE]' and 'Cannot reach' in json.loads(lines[0])['content']
        assert httpx.get(base + '/health').json()['upstream']['state'] == 'unreachable'


# ---------------------------------------------------------------- a scripted server: a stream cut off, malformed events
CHUNK = 'data: {"choices": [{"delta": {"content": "%s"}}]}\n\n'


def scripted(answers: list[bytes], bodies: list | None = None):
    """A loopback HTTP server that answers POSTs with `answers` in turn (then the last one again): a stream's events, or a whole
    response (starting with HTTP/1.1); `bodies` gets each POST's JSON. Returns its /v1 URL and a stop function."""
    srv = socket.create_server(('127.0.0.1', 0))
    served = []
    def run():
        while True:
            try: conn, _ = srv.accept()
            except OSError: return
            with conn:
                data = b''
                while b'\r\n\r\n' not in data: data += conn.recv(65536)
                head, rest = data.split(b'\r\n\r\n', 1)
                n = int(next((l.split(b':')[1] for l in head.split(b'\r\n') if l.lower().startswith(b'content-length')), b'0'))
                while len(rest) < n: rest += conn.recv(65536)
                if head.startswith(b'GET'):
                    payload = b'{"data": [{"id": "scripted"}]}'
                    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n' % len(payload) + payload)
                    continue
                answer = answers[min(len(served), len(answers) - 1)]; served.append(answer)
                if bodies is not None: bodies.append(json.loads(rest))
                if answer.startswith(b'HTTP/1.1'): conn.sendall(answer); continue
                conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n' + answer)
    threading.Thread(target=run, daemon=True).start()
    return f'http://127.0.0.1:{srv.getsockname()[1]}/v1', srv.close


def test_a_cut_stream_and_malformed_events_keep_the_text_and_say_why(tmp_path):
    whole = (CHUNK % 'All ' + CHUNK % 'good.' + 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n').encode()
    cut = (CHUNK % 'Half ' + CHUNK % 'a').encode()  # then the connection closes: no finish_reason, no [DONE]
    bad = (CHUNK % 'Some ' + 'data: {"choices": [{"del\n\n').encode()
    url, stop = scripted([cut, bad, cut, whole])
    try:
        with behind(tmp_path, url, key=None) as base:
            r = post(base, '/chat', body('hello', GREEDY))
            assert r['content'].startswith('Half a\n\n[The upstream server\'s stream ended before the reply did'), r
            replies, done = app_stream(base, '/chat/stream', body('hello', GREEDY))
            assert done and replies[-1].startswith('Some\n\n[The upstream server sent an event this connector cannot read'), replies
            pieces, done = app_stream(base, '/text/stream', json.dumps({'message': 'hello'}).encode())
            assert done and pieces[-1].startswith('Half a\n\n[The upstream'), pieces  # appended: the note comes after the text
            assert post(base, '/chat', body('hello', GREEDY)) == {'content': 'All good.', 'isError': False}  # the next is whole
            assert idle(base)['waiting'] == 0
    finally: stop()


def refusal_400(message: str) -> bytes:
    payload = json.dumps({'object': 'error', 'message': message, 'type': 'BadRequestError', 'param': None, 'code': 400}).encode()
    return b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n' % len(payload) + payload


def test_a_conversation_over_the_upstreams_window_loses_its_oldest_rounds(tmp_path):
    whole = (CHUNK % 'Fits.' + 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n').encode()
    over = refusal_400("This model's maximum context length is 2048 tokens. However, you requested 3848 tokens (3048 in the messages, "
                       "800 in the completion). Please reduce the length of the messages or completion.")  # vLLM's words
    history = [{'role': r, 'content': f'{r} {i} ' + 'x' * 400} for i in range(10) for r in ('user', 'assistant')]
    asked: list = []
    url, stop = scripted([over, whole, over], asked)
    try:
        with behind(tmp_path, url, key=None) as base:
            assert post(base, '/chat', body('And now?', {'maxResponseTokens': 800}, history)) == {'content': 'Fits.', 'isError': False}
            first, second = (len(a['messages']) for a in asked)
            assert first == 21 and 1 < second < first, (first, second)  # the newest rounds and the message, asked once more
            assert asked[1]['messages'][-3:] == asked[0]['messages'][-3:]
            replies, done = app_stream(base, '/chat/stream', body('x' * 9000, {'maxResponseTokens': 800}))  # no rounds to leave out
            assert done and 'too long for the upstream model, which reads 2,048 tokens' in replies[-1], replies
            assert 'lower "max response tokens"' in replies[-1] and len(asked) == 3
            r = httpx.post(base + '/v1/chat/completions', json={'model': 'scripted', 'messages': [{'role': 'user', 'content': 'x'}]})
            assert r.status_code == 400 and 'too long for the upstream model' in r.json()['error']['message'], r.text
            assert httpx.get(base + '/health').json()['upstream']['state'] == 'ok'
    finally: stop()


# ---------------------------------------------------------------- the chat template the scale-out recipe gives vLLM
@pytest.mark.parametrize('history', [
    [],
    [{'role': 'system', 'content': 'Be brief.'}],
    HISTORY,
    [{'role': 'assistant', 'content': 'I begin.'}, {'role': 'user', 'content': 'a'}, {'role': 'user', 'content': 'b'},
     {'role': 'assistant', 'content': 'c'}, {'role': 'system', 'content': 'late rules'}],
])
def test_the_chatglm2_template_is_the_local_engines_prompt(history):
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # as transformers and vLLM render chat templates
    from fc_chatglm.history import to_conversation
    from fc_chatglm.schemas import Message
    from fc_chatglm.tokenizer import chatglm2_prompt
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(
        (PROJECT / 'deploy' / 'chatglm2.jinja').read_text(encoding='utf-8'))
    conv = to_conversation([Message(**m) for m in history], '你好')
    assert template.render(messages=conv.messages(), add_generation_prompt=True) == chatglm2_prompt(conv.query, conv.rounds, conv.system)


def test_a_system_proxy_does_not_catch_a_loopback_upstream(monkeypatch):
    "A proxy set for the whole system (a 'system proxy' client on Windows, or the variables) is for the internet, not for 127.0.0.1."
    hits = []
    proxy = socket.create_server(('127.0.0.1', 0))
    def refuse():  # a proxy that cannot reach the upstream: 502 to everything, as a system proxy answers a loopback address
        while True:
            try: conn, _ = proxy.accept()
            except OSError: return
            with conn:
                hits.append(conn.recv(65536))
                conn.sendall(b'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
    threading.Thread(target=refuse, daemon=True).start()
    for name in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.setenv(name, f'http://127.0.0.1:{proxy.getsockname()[1]}')
    answer = (CHUNK % 'Direct.' + 'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n').encode()
    url, stop = scripted([answer])
    engine = UpstreamEngine(Upstream(url, 'scripted'))
    try:
        out = engine.generate(ChatRequest(message='Hello'))
        assert (out.text, out.reason, hits) == ('Direct.', 'stop', []), (out, hits)
        with httpx.Client() as through: assert through.get(url.replace('127.0.0.1', 'example.invalid') + '/models').status_code == 502
        assert hits, 'the proxy variables are set for other addresses'
    finally: engine.close(); stop(); proxy.close()
