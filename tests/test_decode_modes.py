"""`python -m fc_chatglm --decode ... --context ...` through the real command line: a mode that cannot
be set up here falls back to eager and `/health` says so, and a bad `--context` is reported, not a crash."""
import httpx

from fc_chatglm.testing import start_connector, wait_settled

SETTINGS = {'temperature': 0, 'maxResponseTokens': 12}


def reply(base: str) -> dict:
    return httpx.post(base + '/chat', json={'message': '你好', 'settings': SETTINGS}).json()


def test_graph_without_cuda_falls_back_to_eager_and_health_says_so():
    eager, base_e = start_connector('--demo', '--decode', 'eager')
    graph, base_g = start_connector('--demo', '--decode', 'graph')  # no CUDA device here: recording fails
    try:
        he, hg = wait_settled(base_e), wait_settled(base_g)
        assert (he['status'], he['decode']) == ('ready', 'eager')
        assert (hg['status'], hg['decode']) == ('ready', 'eager'), hg
        assert reply(base_g) == reply(base_e) and reply(base_g)['isError'] is False
    finally:
        for p in (eager, graph): p.kill(); p.wait()


def test_a_context_below_one_token_is_reported_on_health():
    proc, base = start_connector('--demo', '--context', '0')
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and '--context 0' in h['error'], h
        r = reply(base)
        assert r['isError'] is True and '--context 0' in r['content'], r
    finally:
        proc.kill(); proc.wait()
