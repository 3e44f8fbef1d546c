"""The knowledge base's embeddings as a folder import sends them: many files at once, so many requests at the same
time, each the raw text of one chunk as a `text/plain; charset=utf-8` body with a Content-Length (nbs/protocol.md,
"Embedding"). A non-2xx answer fails that file's import, so every request must succeed, with the vector it would get
alone, all of one length."""
import threading
import time

import httpx
import pytest

from fc_chatglm.testing import start_connector

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
    assert health['status'] == 'ready' and health['model'] == 'hybrid: all-MiniLM-L6-v2 + lexical', health
    assert {len(v) for v in vectors} == {health['dimensions']}, ({len(v) for v in vectors}, health)
    with httpx.Client() as client:  # each text again, alone: the same vector
        for i in (0, 1, 3, 4, 30, 31):
            alone = post(client, base, texts[i]).json()['embedding']
            assert max(abs(a - b) for a, b in zip(alone, vectors[i])) < 1e-6, i
    assert vectors[0] != vectors[1]
    print(f'32 concurrent embedding requests answered in {elapsed:.1f} s')
