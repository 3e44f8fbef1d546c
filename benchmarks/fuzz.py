"""Generated attacks on the connector: Schemathesis draws requests from the server's own OpenAPI schema
(its bodies described) and sends them over a real socket to `create_app` on the demo engine, behind
the guard and uvicorn's guarded protocol. It prints the cases tried, the 5xx answers and the crashes,
then checks that the server is alive and still answers correctly. Then it sends `tests/test_fuzz.py`'s
`V1_SEEDS` (bodies found to break the OpenAI API's routes once) to the demo connector with `/v1`, and
prints each one's status and the parameter its 400 names.

    python benchmarks/fuzz.py [--cases 2000] [--seed 15]   # about 4 cases/s on a busy 2-core CPU: --cases 300 took 90 s

`tests/test_fuzz.py` runs the same thing with a small count and a fixed seed; both use `fc_chatglm.testing`'s `fuzz`."""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fc_chatglm.testing import brief_schema, fuzz, openapi_with_bodies, serve_demo, still_correct  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'tests'))
from test_fuzz import send_seeds, serve_v1  # noqa: E402


def main():
    logging.getLogger('fc_chatglm').setLevel(logging.ERROR)  # every refused case logs a warning
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--cases', type=int, default=2000); p.add_argument('--seed', type=int, default=15)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        server, base = serve_demo(Path(d))
        schema = brief_schema(openapi_with_bodies(server.config.app))
        start = time.perf_counter()
        out = fuzz(base, schema, a.cases, a.seed)
        took = time.perf_counter() - start
        alive = still_correct(base)
        print(f'cases tried: {out["cases"]} in {took:.0f} s ({out["cases"] / took:.0f}/s), seed {a.seed}')
        print(f'statuses: {dict(sorted(out["statuses"].items()))}')
        print(f'5xx: {len(out["server_errors"])}; crashes: {len(out["crashes"])}; alive and correct afterwards: {alive}')
        for e in out['server_errors'][:10] + out['crashes'][:10]: print('  ', e)
        server.should_exit = True
    with tempfile.TemporaryDirectory() as d:
        server, base = serve_v1(Path(d))
        for route, param, status, named in send_seeds(base):
            print(f'seed {route}: {status}, naming {named!r} ({"as expected" if (status, named) == (400, param) else f"expected 400 naming {param!r}"})')
        print(f'alive and correct after the seeds: {still_correct(base)}')
        server.should_exit = True


if __name__ == '__main__':
    main()
