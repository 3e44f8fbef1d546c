"""Generated requests, not only chosen ones: Schemathesis draws valid and invalid requests from the server's own
OpenAPI schema (with the bodies its routes read by hand described) and sends them over a real socket to
`create_app` on the demo engine. A fixed seed and a small count keep it fast; `benchmarks/fuzz.py` runs
thousands. Every answer must be below 500, and the server must answer correctly afterwards."""
import pytest

from fc_chatglm.testing import brief_schema, fuzz, openapi_with_bodies, serve_demo, still_correct


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
