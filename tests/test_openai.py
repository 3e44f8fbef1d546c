"""The OpenAI API (`/v1`, nbs/07a_openai_api.ipynb) as OpenAI clients meet it: the official `openai` SDK, sync,
async and streaming, against a real `python -m fc_chatglm --demo` process on loopback."""
import asyncio
import base64
import json
import struct
import threading
import time

import httpx
import openai
import pytest

from fc_chatglm.testing import ready_connector

HELLO = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': '你好'}]


@pytest.fixture(scope='module')
def base():
    with ready_connector('--demo', '--embedding', 'hybrid') as url: yield url  # the embedding model these tests name


@pytest.fixture
def client(base):
    with openai.OpenAI(base_url=base + '/v1', api_key='unused', max_retries=0) as c: yield c


def idle(base, seconds=10) -> dict:
    "/health once nothing runs or waits (or after `seconds`)."
    deadline = time.time() + seconds
    while (h := httpx.get(base + '/health').json())['waiting'] and time.time() < deadline: time.sleep(0.05)
    return h


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert ids[0] == 'demo' and 'hybrid' in ids


def test_chat(client):
    r = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=7, temperature=0)
    assert r.object == 'chat.completion' and r.choices[0].message.role == 'assistant'
    assert r.choices[0].finish_reason == 'length' and r.usage.completion_tokens == 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7 and r.usage.prompt_tokens > 0
    again = client.chat.completions.create(model='demo', messages=HELLO, max_completion_tokens=7, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content  # greedy: the same reply


def test_chat_stream(base, client):
    whole = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model='demo', messages=HELLO, max_tokens=10, temperature=0, stream=True,
                                                 stream_options={'include_usage': True}))
    text = ''.join(c.choices[0].delta.content or '' for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == 'length'
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    plain = list(client.chat.completions.create(model='demo', messages=HELLO, max_tokens=3, stream=True))
    assert all(c.usage is None for c in plain)  # no usage chunk unless asked
    with httpx.stream('POST', base + '/v1/chat/completions', json={'model': 'demo', 'messages': HELLO, 'max_tokens': 5, 'stream': True,
                                                                  'stream_options': {'include_usage': True}}) as r:
        raw = [json.loads(l.removeprefix('data: ')) for l in r.iter_lines() if l.startswith('data: {')]
    assert [c['usage'] for c in raw[:-1]] == [None] * (len(raw) - 1) and raw[-1]['usage']['completion_tokens'] == 5  # null until the last, as OpenAI's


def test_async_chat(base):
    async def main():
        async with openai.AsyncOpenAI(base_url=base + '/v1', api_key='unused', max_retries=0) as c:
            whole = await c.chat.completions.create(model='demo', messages=HELLO, max_tokens=6, temperature=0)
            stream = await c.chat.completions.create(model='demo', messages=HELLO, max_tokens=6, temperature=0, stream=True)
            text = ''.join([ch.choices[0].delta.content or '' async for ch in stream])
            return whole.choices[0].message.content, text
    whole, streamed = asyncio.run(main())
    assert whole == streamed and whole


def test_completions(client):
    r = client.completions.create(model='demo', prompt='Once upon a time', max_tokens=5, temperature=0)
    assert r.object == 'text_completion' and r.usage.completion_tokens == 5 and r.choices[0].finish_reason == 'length'
    parts = list(client.completions.create(model='demo', prompt='Once upon a time', max_tokens=5, temperature=0, stream=True))
    assert ''.join(p.choices[0].text for p in parts) == r.choices[0].text


def test_seed(client):
    ask = lambda seed: client.chat.completions.create(model='demo', messages=HELLO, max_tokens=12, temperature=1,
                                                      seed=seed).choices[0].message.content
    assert ask(3) == ask(3)
    assert len({ask(s) for s in range(4)}) > 1


def test_stop(client):
    ask = dict(model='demo', messages=HELLO, max_tokens=20, temperature=1, seed=11)
    full = client.chat.completions.create(**ask).choices[0].message.content
    stop = full[3:5]
    cut = client.chat.completions.create(**ask, stop=[stop, 'never'])
    assert cut.choices[0].finish_reason == 'stop'
    assert cut.choices[0].message.content == full[:full.find(stop)].strip()
    streamed = ''.join(c.choices[0].delta.content or '' for c in client.chat.completions.create(**ask, stop=stop, stream=True))
    assert stop not in streamed and streamed.strip() == cut.choices[0].message.content


def test_long_stops_are_refused(base, client):
    "A stop sequence is compared with every generated piece on the one generation thread: its size is bounded, refused in a sentence."
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='demo', messages=HELLO, max_tokens=20, stop='a' * 150_000)
    assert e.value.param == 'stop' and 'a stop sequence of 150,000 characters' in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='demo', messages=HELLO, max_tokens=20, stop=list('abcde'))
    assert e.value.param == 'stop' and '5 stop sequences' in e.value.message
    longest = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=20, temperature=0, stop=['\x00' * 1000] * 4)
    assert longest.choices[0].finish_reason == 'length' and longest.usage.completion_tokens == 20  # the most it reads is served


def test_embeddings(client):
    floats = client.embeddings.create(model='hybrid', input=['一个句子', 'a sentence'], encoding_format='float')
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) > 100
    b64 = client.embeddings.create(model='hybrid', input='一个句子', encoding_format='base64')  # asked for: the caller decodes it
    raw = base64.b64decode(b64.data[0].embedding)
    assert list(struct.unpack(f'<{len(raw) // 4}f', raw)) == pytest.approx(floats.data[0].embedding, abs=1e-6)
    plain = client.embeddings.create(model='hybrid', input='一个句子')  # the SDK asks for base64 by default
    assert plain.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 2  # as OpenAI sends it: the tokens of both texts
    with pytest.raises(openai.BadRequestError) as e:  # 200,000 characters in all, however many texts
        client.embeddings.create(model='hybrid', input=['x' * 150_000, 'y' * 60_000])
    assert e.value.param == 'input' and '210,000 characters' in e.value.message


def test_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='demo', messages=HELLO, n=2)
    assert e.value.status_code == 400 and e.value.param == 'n' and 'n=2' in e.value.message
    with pytest.raises(openai.BadRequestError) as e:  # tools' older form (tools are served: tests/test_structured.py)
        client.chat.completions.create(model='demo', messages=HELLO, functions=[{'name': 'f'}])
    assert e.value.param == 'functions'
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model='demo', prompt='x', logprobs=2)
    assert e.value.param == 'logprobs'
    with pytest.raises(openai.BadRequestError) as e:  # a text completion reads no tools
        client.completions.create(model='demo', prompt='x', extra_body={'tools': [{'type': 'function', 'function': {'name': 'f'}}]})
    assert e.value.param == 'tools'
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model='gpt-4o', messages=HELLO)
    assert e.value.param == 'model' and 'demo' in e.value.message
    assert (e.value.type, e.value.code) == ('invalid_request_error', 'model_not_found')  # as OpenAI answers
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model='text-embedding-3-small', input='x')
    ok = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=2, user='someone', store=False)
    assert ok.choices[0].message.role == 'assistant'  # harmless extras are accepted


def test_disconnect_cancels(base, client):
    stream = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=1500, temperature=0, stream=True)
    next(iter(stream)); next(iter(stream))
    assert httpx.get(base + '/health').json()['waiting'] == 1
    stream.close()
    h = idle(base)
    assert (h['waiting'], h['streams']) == (0, 0)
    # a whole reply whose client gives up (its timeout) is cancelled too
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).chat.completions.create(model='demo', messages=HELLO, max_tokens=1500, temperature=0)
    assert idle(base)['waiting'] == 0


def test_app_and_openai_share_the_queue(base, client):
    "The app's requests and OpenAI clients' wait in one line, and all are answered."
    results = {}
    # 200 tokens each: long enough that they overlap however slowly the machine starts the threads
    def app_chat(i): results[f'app{i}'] = httpx.post(base + '/chat', json={'message': '你好', 'settings': {'temperature': 0, 'maxResponseTokens': 200}}, timeout=60).json()
    def oa_chat(i): results[f'oa{i}'] = client.chat.completions.create(model='demo', messages=HELLO, max_tokens=200, temperature=0)
    threads = [threading.Thread(target=f, args=(i,)) for i in range(3) for f in (app_chat, oa_chat)]
    seen = 0
    for t in threads: t.start()
    while any(t.is_alive() for t in threads): seen = max(seen, httpx.get(base + '/health').json()['waiting']); time.sleep(0.01)
    assert len(results) == 6 and seen >= 2  # they queued behind one another
    assert all(not r['isError'] for k, r in results.items() if k.startswith('app'))
    assert all(r.choices[0].finish_reason in ('stop', 'length') for k, r in results.items() if k.startswith('oa'))
    assert idle(base)['waiting'] == 0
