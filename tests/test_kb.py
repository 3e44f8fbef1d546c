"""The knowledge base's embeddings as a folder import sends them: many files at once, so many requests at the same
time, each the raw text of one chunk as a `text/plain; charset=utf-8` body with a Content-Length (nbs/protocol.md,
"Embedding"). A non-2xx answer fails that file's import, so every request must succeed, with the vector it would get
alone, all of one length."""
import threading
import time

import httpx
import pytest

from fc_chatglm.testing import ends_cleanly, start_connector

TOPICS = ['The quarterly report is due on the last Friday of March.', '猫每天要睡十二到十六个小时。',
          'Git rebase replays commits on top of another branch.', '绿茶适合用八十度左右的水冲泡。',
          'Lithium-ion batteries age fastest when kept full and hot.', '高铁票开车前八天以上退票不收手续费。',
          'Tides come from the pull of the Moon and the Sun.', '数据库索引通常使用B+树结构。']


def chunk(i: int) -> str:
    "A distinct chunk of a document: short or long (past MiniLM's 256 tokens, so cut into windows), English or Chinese."
    base = TOPICS[i % len(TOPICS)]
    return f'Chunk {i}. ' + base * (1 + 24 * (i % 3 == 0))


@pytest.fixture(scope='module')
def base():
    proc, url = start_connector('--demo', '--device', 'cpu')  # the shipped config.json: the default embedding mode
    yield url
    proc.kill()
    proc.wait()


def post(client: httpx.Client, base: str, text: str) -> httpx.Response:
    data = text.encode('utf-8')
    return client.post(base + '/embedding', content=data, timeout=300,
                       headers={'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': str(len(data))})


def test_a_folder_import_of_32_chunks_at_once_all_succeed(base):
    texts = [chunk(i) for i in range(32)]
    replies, start = [None] * len(texts), threading.Barrier(len(texts))

    def send(i: int):
        with httpx.Client() as client:  # a connection of its own, as each file's import has
            start.wait(60)
            replies[i] = post(client, base, texts[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
    t0 = time.perf_counter()
    for t in threads: t.start()
    for t in threads: t.join(600)
    elapsed = time.perf_counter() - t0
    assert all(r is not None for r in replies), 'a request got no answer'
    assert [r.status_code for r in replies] == [200] * len(texts), [(r.status_code, r.text[:200]) for r in replies if r.status_code != 200]
    vectors = [r.json()['embedding'] for r in replies]
    health = httpx.get(base + '/health').json()['embedding']
    assert health['status'] == 'ready' and health['mode'] == 'multilingual', health
    assert health['model'] == 'multilingual: USE multilingual v3, centred + lexical', health
    assert {len(v) for v in vectors} == {health['dimensions']}, ({len(v) for v in vectors}, health)
    with httpx.Client() as client:  # each text again, alone: the same vector
        for i in (0, 1, 3, 4, 30, 31):
            alone = post(client, base, texts[i]).json()['embedding']
            assert max(abs(a - b) for a, b in zip(alone, vectors[i])) < 1e-6, i
    assert vectors[0] != vectors[1]
    print(f'32 concurrent embedding requests answered in {elapsed:.1f} s')


def test_a_folder_import_as_the_app_sends_it_answers_every_chunk_in_time(base):
    """24 files at once, each sending its 3 chunks of about 2,000 characters one after another (the app's order), in
    English and Chinese: every request answered 200 within the app's 100 s, with a vector of the mode's length."""
    items = [f'File {f}, chunk {c}. ' + (TOPICS[(f + c) % len(TOPICS)] + ' ') * (2000 // (len(TOPICS[(f + c) % len(TOPICS)]) + 1))
             for f in range(24) for c in range(3)]
    answers, lock, go = [], threading.Lock(), threading.Barrier(24)

    def file(f: int):
        with httpx.Client() as client:
            go.wait(60)
            for c in range(3):
                t0 = time.perf_counter()
                r = post(client, base, items[3 * f + c])
                with lock: answers.append((r.status_code, time.perf_counter() - t0, len(r.json().get('embedding', ()))))

    threads = [threading.Thread(target=file, args=(f,)) for f in range(24)]
    for t in threads: t.start()
    for t in threads: t.join(600)
    dims = httpx.get(base + '/health').json()['embedding']['dimensions']
    assert len(answers) == 72 and {code for code, _, _ in answers} == {200}, answers
    assert {n for _, _, n in answers} == {dims} and max(s for _, s, _ in answers) < 100, answers


def test_a_client_that_leaves_takes_its_work_with_it(base):
    """Three clients send a long text each and hang up; a short request sent after them is answered in a fraction of
    the time one long text takes, because the queue drops the leavers' work (a ratio measured in this run)."""
    long = '\n'.join(f'Paragraph {i}. ' + TOPICS[i % len(TOPICS)] * 6 for i in range(900))[:190_000]
    with httpx.Client() as client:
        t0 = time.perf_counter()
        assert post(client, base, long).status_code == 200
        alone = time.perf_counter() - t0

    def leave():
        try: httpx.post(base + '/embedding', content=long.encode('utf-8'), timeout=0.5,
                        headers={'Content-Type': 'text/plain; charset=utf-8'})
        except httpx.TimeoutException: pass  # the client gives up and closes its connection

    leavers = [threading.Thread(target=leave) for _ in range(3)]
    for t in leavers: t.start()
    for t in leavers: t.join()
    with httpx.Client() as client:
        t0 = time.perf_counter()
        assert post(client, base, 'A short question after they left.').status_code == 200
        short = time.perf_counter() - t0
    assert short < alone / 2, (short, alone)
    print(f'one long text alone {alone:.1f} s; a short one after three clients left with theirs: {short:.1f} s')


EXITS_MID_STEP = '''
import asyncio
from fc_chatglm.embed import Embeddings
embeddings = Embeddings('minilm', device='cpu'); embeddings.embed('warm up')  # a torch model: its steps run in C++
async def main():
    asyncio.ensure_future(embeddings.aembed(['The quick brown fox jumps over the lazy dog. ' * 40] * 300))
    await asyncio.sleep(1.0)
    print('the script ends while its embedder computes')
asyncio.run(main())
'''

def test_a_process_that_ends_while_the_embedder_computes_exits_cleanly(tmp_path):
    "Without the queue closed at exit, its thread is torn down inside a torch step: 'terminate called without an active exception', status 134."
    assert 'the script ends' in ends_cleanly(EXITS_MID_STEP, tmp_path)
