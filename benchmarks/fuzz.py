"""Generated attacks on the connector: Schemathesis draws requests from the server's own OpenAPI schema
(its bodies described) and sends them over a real socket to `create_app` on the demo engine, behind
the guard and uvicorn's guarded protocol. It prints the cases tried, the 5xx answers and the crashes,
then checks that the server is alive and still answers correctly.

    python benchmarks/fuzz.py [--cases 2000] [--seed 15]   # about 4 cases/s on a busy 2-core CPU: --cases 300 took 90 s

`tests/test_fuzz.py` runs the same thing with a small count and a fixed seed."""
import argparse
import copy
import logging
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.embed import Embeddings  # noqa: E402
from fc_chatglm.load import LoadOptions, load_engine  # noqa: E402
from fc_chatglm.schemas import ChatRequest, TextRequest  # noqa: E402
from fc_chatglm.server import ROUTES, ModelHost, create_app  # noqa: E402
from fc_chatglm.testing import serve_in_thread  # noqa: E402


def described(app, routes: dict = ROUTES) -> dict:
    """The app's OpenAPI schema, with the request bodies its routes read by hand (`json_body`, the embedding's
    raw text) described, so that a fuzzer generates them. The routes declare none: FastAPI cannot see them."""
    schema = copy.deepcopy(app.openapi())
    components = schema.setdefault('components', {}).setdefault('schemas', {})
    def body(model) -> dict:
        s = model.model_json_schema(by_alias=True, ref_template='#/components/schemas/{model}')
        components.update(s.pop('$defs', {}))
        components[model.__name__] = s
        return {'required': True, 'content': {'application/json': {'schema': {'$ref': f'#/components/schemas/{model.__name__}'}}}}
    bodies = {'chat-rest': body(ChatRequest), 'chat-stream': body(ChatRequest), 'text-completion-rest': body(TextRequest),
              'text-completion-stream': body(TextRequest),
              'embedding-rest': {'required': True, 'content': {'text/plain': {'schema': {'type': 'string', 'maxLength': 4000}}}}}
    for kind, b in bodies.items(): schema['paths'][routes[kind]]['post']['requestBody'] = b
    return schema


def brief(schema: dict, tokens: int = 16) -> dict:
    """`schema` with every generated request asking for at most `tokens` new tokens: `settings` and its `maxResponseTokens`
    required, at most `tokens`. The demo model rarely ends a reply early, so the default of 800 tokens would make each valid
    case a full generation (seconds), and the fuzz run hours long. The route's answer to larger values is tested elsewhere."""
    schema = copy.deepcopy(schema)
    parts = schema['components']['schemas']
    settings = parts['Settings']
    settings['properties']['maxResponseTokens']['maximum'] = tokens
    settings['required'] = sorted(set(settings.get('required', [])) | {'maxResponseTokens'})
    for name in ('ChatRequest', 'TextRequest'):
        parts[name]['required'] = sorted(set(parts[name].get('required', [])) | {'settings'})
        parts[name]['properties']['settings'] = {'$ref': '#/components/schemas/Settings'}
    return schema


def demo_server(folder: Path):
    "The connector on the demo engine and the bundled embedding model, served by uvicorn on a free loopback port; (server, base URL)."
    host = ModelHost(); host.ready(load_engine(LoadOptions(demo=True, demo_dir=folder)))
    return serve_in_thread(create_app(host, embeddings=Embeddings('minilm', device='cpu')))


def fuzz(base: str, cases: int, seed: int = 15) -> dict:
    """Send about `cases` generated requests to the server at `base`, spread over its operations; return the counts:
    cases, statuses, 5xx (with the request that got each) and crashes (an exception instead of an answer)."""
    schema = schemathesis.openapi.from_dict(described_cache[base])
    schema.config.update(base_url=base)
    ops = [r.ok() for r in schema.get_all_operations()]
    modes = {GenerationMode.POSITIVE: 'valid', GenerationMode.NEGATIVE: 'invalid'}
    out = {'cases': 0, 'statuses': Counter(), 'server_errors': [], 'crashes': []}
    with_body = [op for op in ops if op.method.upper() == 'POST' and op.body]
    for op in ops:
        per_op = max(1, cases // len(with_body)) if op in with_body else 20  # a cancel or /health has few distinct requests
        @given(case=st.one_of(*[op.as_strategy(m) for m in modes]))
        @hypothesis.settings(max_examples=per_op, deadline=None, database=None, phases=[Phase.generate],
                             suppress_health_check=list(HealthCheck), derandomize=False)
        @hypothesis.seed(seed)
        def one(case):
            out['cases'] += 1
            try: r = case.call(timeout=120)
            except Exception as e:
                out['crashes'].append((op.label, repr(case.body)[:300], ''.join(traceback.format_exception_only(e)).strip()))
                return
            out['statuses'][r.status_code] += 1
            if r.status_code >= 500: out['server_errors'].append((op.label, repr(case.body)[:300], r.status_code, r.text[:300]))
        one()
    return out


described_cache: dict = {}


def still_correct(base: str) -> bool:
    "Whether the server answers as before: healthy, a greedy reply to a plain chat request."
    h = httpx.get(base + '/health', timeout=30).json()
    r = httpx.post(base + '/chat', json={'message': 'hi', 'settings': {'temperature': 0, 'maxResponseTokens': 8}}, timeout=60).json()
    return h['status'] == 'ready' and r['isError'] is False and bool(r['content'])


def main():
    logging.getLogger('fc_chatglm').setLevel(logging.ERROR)  # every refused case logs a warning
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--cases', type=int, default=2000); p.add_argument('--seed', type=int, default=15)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        server, base = demo_server(Path(d))
        described_cache[base] = brief(described(server.config.app))
        start = time.perf_counter()
        out = fuzz(base, a.cases, a.seed)
        took = time.perf_counter() - start
        alive = still_correct(base)
        print(f'cases tried: {out["cases"]} in {took:.0f} s ({out["cases"] / took:.0f}/s), seed {a.seed}')
        print(f'statuses: {dict(sorted(out["statuses"].items()))}')
        print(f'5xx: {len(out["server_errors"])}; crashes: {len(out["crashes"])}; alive and correct afterwards: {alive}')
        for e in out['server_errors'][:10] + out['crashes'][:10]: print('  ', e)
        server.should_exit = True


if __name__ == '__main__':
    main()
