"""Generated requests, not only chosen ones: Schemathesis draws valid and invalid requests from the server's own
OpenAPI schema (with the bodies its routes read by hand described) and sends them over a real socket to
`create_app` on the demo engine. A fixed seed and a small count keep it fast; `benchmarks/fuzz.py` runs
thousands. Every answer must be below 500, and the server must answer correctly afterwards. Beside
them, `V1_SEEDS`: bodies found to break the OpenAI API's routes once, each sent as it is and answered
with a 400 that names the parameter."""
import json
from pathlib import Path

import httpx
import pytest

from fc_chatglm.testing import brief_schema, fuzz, openapi_with_bodies, serve_demo, serve_in_thread, still_correct

HELLO = {'model': 'demo', 'messages': [{'role': 'user', 'content': 'hi'}], 'max_tokens': 4}
V1_SEEDS = [  # (route, raw body, the parameter the 400 names: None where the body cannot be read as JSON)
    ('/v1/chat/completions', b'{"model": "demo", "metadata": ' + b'[' * 100_000 + b']' * 100_000 + b'}', None),  # RecursionError
    ('/v1/chat/completions', json.dumps({**HELLO, 'max_tokens': 2**63}).encode(), 'max_tokens'),  # past any window
    ('/v1/chat/completions', json.dumps({**HELLO, 'seed': 2**64}).encode(), 'seed'),  # torch's seed overflows
    ('/v1/chat/completions', json.dumps({**HELLO, 'messages': [{'role': 'user', 'content': 'a\ud800b'}]}).encode(),
     'messages[0].content'),  # a lone surrogate: the tokenizer fails on it
    ('/v1/completions', json.dumps({'model': 'demo', 'prompt': 'x\udfff', 'max_tokens': 4}).encode(), 'prompt'),
    ('/v1/embeddings', json.dumps({'model': 'minilm', 'input': ['ok', '\ud800']}).encode(), 'input[1]'),
]


def serve_v1(folder: Path):
    "The demo connector with the OpenAI API under /v1, on a thread: (server, base URL)."
    from fc_chatglm.embed import Embeddings
    from fc_chatglm.load import LoadOptions, load_engine
    from fc_chatglm.openai_api import add_openai
    from fc_chatglm.server import ModelHost, create_app
    host = ModelHost(); host.ready(load_engine(LoadOptions(demo=True, demo_dir=folder)))
    return serve_in_thread(add_openai(create_app(host, embeddings=Embeddings('minilm', device='cpu'))))


def send_seeds(base: str) -> list[tuple]:
    "Each of `V1_SEEDS` sent to `base`: (route, the parameter expected, status, the error's param)."
    out = []
    for route, raw, param in V1_SEEDS:
        r = httpx.post(base + route, content=raw, headers={'content-type': 'application/json'}, timeout=60)
        out.append((route, param, r.status_code, r.json().get('error', {}).get('param')))
    return out


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "The demo connector on a thread, and its schema with the bodies described; yields (base URL, schema)."
    server, base = serve_demo(tmp_path_factory.mktemp('fuzz'))
    yield base, brief_schema(openapi_with_bodies(server.config.app))
    server.should_exit = True


def test_the_schema_describes_every_body(server):
    _, schema = server
    for path in ('/chat', '/chat/stream', '/text', '/text/stream', '/embedding'):
        assert 'requestBody' in schema['paths'][path]['post'], path
    assert schema['components']['schemas']['ChatRequest']['properties']['history']


def test_generated_requests_get_no_server_error(server):
    base, schema = server
    out = fuzz(base, schema, cases=60, seed=15)
    assert out['cases'] >= 60 and not out['server_errors'] and not out['crashes'], out
    assert still_correct(base)


def test_v1_seeds_are_refused_by_name(tmp_path):
    server, base = serve_v1(tmp_path)
    try:
        for route, param, status, named in send_seeds(base):
            assert (status, named) == (400, param), (route, param, status, named)
        assert still_correct(base)
    finally: server.should_exit = True
