"""Generated requests, not only chosen ones: Schemathesis draws valid and invalid requests from the server's own
OpenAPI schema (with the bodies its routes read by hand described) and sends them over a real socket to
`create_app` on the demo engine. A fixed seed and a small count keep it fast; `benchmarks/fuzz.py` runs
thousands. Every answer must be below 500, and the server must answer correctly afterwards."""
import importlib.util

import pytest

from fc_chatglm.launch import PROJECT

spec = importlib.util.spec_from_file_location('fc_fuzz', PROJECT / 'benchmarks' / 'fuzz.py')
fuzzing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fuzzing)


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    server, base = fuzzing.demo_server(tmp_path_factory.mktemp('fuzz'))
    fuzzing.described_cache[base] = fuzzing.brief(fuzzing.described(server.config.app))
    yield base
    server.should_exit = True


def test_the_schema_describes_every_body(server):
    schema = fuzzing.described_cache[server]
    for path in ('/chat', '/chat/stream', '/text', '/text/stream', '/embedding'):
        assert 'requestBody' in schema['paths'][path]['post'], path
    assert schema['components']['schemas']['ChatRequest']['properties']['history']


def test_generated_requests_get_no_server_error(server):
    out = fuzzing.fuzz(server, cases=60, seed=15)
    assert out['cases'] >= 60 and not out['server_errors'] and not out['crashes'], out
    assert fuzzing.still_correct(server)
