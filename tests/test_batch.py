"""Replies decoded together equal each request served alone: a random ChatGLM2 of the 6B's width in float32 (the rows'
products taken together, rows joining and leaving mid-way), and app streams sent at once to a real connector whose
demo model decodes them together, against one that decodes them one at a time (`--max-batch 1`)."""
import json
from collections import Counter
import math
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
import torch

from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.decode import Batcher, Decoder, DirectRows, Row
from fc_chatglm.direct import DirectStep, batch_step
from fc_chatglm.speedups import prepare
from fc_chatglm.testing import app_stream, ends_cleanly, start_connector, wait_ready

greedy = lambda logits: logits.argmax(-1)


@pytest.fixture(scope='module')
def wide():
    "One layer of ChatGLM2-6B's width (hidden 4096, MLP 13696, 32 heads, 2 key-value groups), float32, prepared; a small vocabulary."
    with torch.inference_mode():
        return prepare(random_chatglm2({**CHATGLM2_6B_CONFIG, 'num_layers': 1, 'padded_vocab_size': 2048}, seed=1), 'cpu', torch.float32)


def alone(model, prompt: list[int], n: int) -> list[int]:
    with Decoder(model, 'direct').reply(prompt, greedy, n) as r: return list(r)


class CancelAt:
    "Greedy, and sets `cancel` as it chooses its `at`-th token: a row cancelled mid-way, at a known step."
    def __init__(self, at: int, cancel: threading.Event): self.at, self.cancel, self.n = at, cancel, 0
    def __call__(self, logits):
        self.n += 1
        if self.n == self.at: self.cancel.set()
        return greedy(logits)


def test_logits_of_rows_together_are_within_1e_5_of_each_alone(wide):
    prompts, fed = [[5, 6, 7], list(range(40, 57)), list(range(100, 140))], [7, 8, 9]
    with torch.inference_mode():
        ref = []
        for p in prompts:
            s = DirectStep(wide); s(torch.tensor([p]))
            ref.append(torch.cat([s(torch.tensor([[t]])) for t in fed]))
        rows = [DirectStep(wide) for _ in prompts]
        for s, p in zip(rows, prompts): s(torch.tensor([p]))
        got = torch.stack([batch_step(rows, [torch.tensor([t])] * len(rows)) for t in fed], 1)
    diff = max((got[r] - ref[r]).abs().max().item() for r in range(len(prompts)))
    print(f'largest logit difference, 3 rows together against each alone: {diff:.2g}')
    assert diff < 1e-5, diff
    assert all(torch.equal(got[r].argmax(-1), ref[r].argmax(-1)) for r in range(len(prompts)))


def test_a_6b_width_batch_with_rows_joining_and_cancelled_gives_each_reply_alone(wide):
    prompts = [[5, 6, 7], list(range(40, 57)), list(range(100, 140)), list(range(300, 309))]
    batcher, stop = Batcher(DirectRows(wide), max_batch=3), threading.Event()
    rows = [Row(prompts[0], greedy, 10, threading.Event()), Row(prompts[1], CancelAt(4, stop), 10, stop),
            Row(prompts[2], greedy, 10, threading.Event()), Row(prompts[3], greedy, 10, threading.Event())]
    for r in rows[:2]: batcher.submit(r)
    head = iter(rows[0]); early = [next(head) for _ in range(3)]
    for r in rows[2:]: batcher.submit(r)  # the third joins mid-way; the fourth waits for a free row (max_batch 3)
    got = [early + list(head)] + [list(r) for r in rows[1:]]
    want = [alone(wide, p, 10) for p in prompts]
    assert got[1] == want[1][:4] and rows[1].ended == 'cancel', (got[1], rows[1].ended)
    assert [got[0], got[2], got[3]] == [want[0], want[2], want[3]]
    assert max(batcher.widths) == 3 and 2 in batcher.widths, batcher.widths


def test_a_prompt_read_in_chunks_beside_running_rows_gives_its_reply_alone(wide):
    long = list(range(500, 560))
    batcher = Batcher(DirectRows(wide), max_batch=2)
    batcher.chunk = 16  # 60 tokens: four chunks, each between two steps of the running row
    first = Row([5, 6, 7], greedy, 24, threading.Event()); batcher.submit(first)
    head = iter(first); early = [next(head)]
    late = Row(long, greedy, 6, threading.Event()); batcher.submit(late)
    assert list(late) == alone(wide, long, 6)
    assert early + list(head) == alone(wide, [5, 6, 7], 24)


class SleepyRows:
    "A batch's model stand-in whose step takes 40 ms, plus 0.5 ms a prompt token read: steps timed as a CPU times them, without a model."
    model = SimpleNamespace(device=torch.device('cpu'))
    def __init__(self, slow: dict | None = None): # ('chunk' or 'plain', k) -> seconds other work adds to the k-th such step
        self.log, self.slow, self.seen = [], slow or {}, Counter()  # (rows, prompt tokens, seconds) of every step
    def new(self): return None
    def keeps(self, cache): return False
    def step(self, caches, ids):
        n, t0 = sum(len(x) for x in ids if len(x) > 1), time.perf_counter()
        kind = 'chunk' if n > 8 else 'plain' if len(ids) > 1 and n == 0 else None  # a long prompt's chunk; a step of 2 decoding rows
        if kind: self.seen[kind] += 1
        time.sleep(0.04 + 0.0005 * n + self.slow.get((kind, self.seen[kind]), 0))
        self.log.append((len(ids), n, time.perf_counter() - t0))
        return torch.zeros(len(ids), 8)


@pytest.mark.parametrize('slow', [{}, {('chunk', 1): 0.3}, {('chunk', 2): 0.3}, {('plain', 3): 0.3}],
                         ids=['quiet', 'first chunk slowed', 'second chunk slowed', 'a plain step slowed'])
def test_a_long_prompt_joins_in_chunks_that_keep_the_running_rows_gap_within_gap_steps(slow):
    "Chunks within GAP steps, from an estimate 20 times too small; a step slowed by other work (7.5 steps more) neither shrinks nor swells the chunks after it."
    rows = SleepyRows(slow); batcher = Batcher(rows, max_batch=3)
    running = [Row([1, 2], greedy, 80, threading.Event()) for _ in range(2)]
    for r in running: batcher.submit(r)
    heads = [iter(r) for r in running]
    for h in heads: next(h); next(h)  # both decode
    while rows.seen['plain'] < 4: time.sleep(0.01)
    batcher.costs = [0.0005 / 20] * 3  # an estimate from a lighter load: a prompt token's time twenty times too small
    late = Row(list(range(3, 1003)), greedy, 1, threading.Event()); batcher.submit(late)
    assert len(list(late)) == 1
    for r in running: r.leave(); list(r)
    plain = statistics.median(t for w, n, t in rows.log if w == 2 and n == 0)
    chunks = [(n, t) for w, n, t in rows.log if w == 3]
    sizes = [n for n, _ in chunks]
    assert sum(sizes) == 1000 and sizes[0] <= Batcher.CHUNK and all(b <= Batcher.RAMP * a for a, b in zip(sizes, sizes[1:])), sizes
    slowed = {k for kind, k in slow if kind == 'chunk'}
    assert max(t for i, (_, t) in enumerate(chunks, 1) if i not in slowed) <= 1.15 * Batcher.GAP * plain, (plain, chunks)  # the running rows' gap
    fewest = math.ceil(1000 * 0.0005 / ((Batcher.GAP - 1) * 0.04))  # chunks of (GAP - 1) steps' time
    assert len(chunks) <= fewest + 1, (fewest, sizes)  # the first chunk, timed before the rest, costs one more at most


def streams(base: str, messages: list[str], settings: dict) -> list[str]:
    "The final reply of each message, all streamed at once as the app streams them."
    def one(m):
        shown, done = app_stream(base, '/chat/stream', json.dumps({'message': m, 'history': [], 'settings': settings}).encode())
        assert done
        return shown[-1] if shown else ''
    with ThreadPoolExecutor(len(messages)) as pool: return list(pool.map(one, messages))


def test_app_streams_at_once_get_the_replies_of_a_connector_that_writes_one_at_a_time():
    batched, base_b = start_connector('--demo', '--embedding', 'off', '--max-batch', '4')
    serial, base_s = start_connector('--demo', '--embedding', 'off', '--max-batch', '1')
    try:
        wait_ready(base_b, proc=batched); wait_ready(base_s, proc=serial)
        assert [httpx.get(b + '/health').json()['max_batch'] for b in (base_b, base_s)] == [4, 1]
        messages, settings = ['Hi', 'Tell me a story about the park', 'word ' * 25, '你好', 'Why?'], {'temperature': 0, 'maxResponseTokens': 24}
        got, want = streams(base_b, messages, settings), streams(base_s, messages, settings)
        assert got == want and all(got), (got, want)
        long = threading.Thread(target=app_stream, args=(base_b, '/chat/stream', json.dumps(
            {'message': 'long', 'settings': {'temperature': 0, 'maxResponseTokens': 1500}}).encode()))
        long.start()
        deadline = time.time() + 10
        while not httpx.get(base_b + '/health').json()['streams']: assert time.time() < deadline; time.sleep(0.01)
        t0 = time.perf_counter(); h = httpx.get(base_b + '/health').json(); health_s = time.perf_counter() - t0
        t0 = time.perf_counter(); httpx.post(base_b + '/chat/stream/cancel'); long.join(10); cancel_s = time.perf_counter() - t0
        assert not long.is_alive() and h['status'] == 'ready', h
        assert health_s < 1 and cancel_s < 2, (health_s, cancel_s)  # generous: at once
    finally:
        for p in (batched, serial): p.kill(); p.wait()


def test_closing_a_batch_cancels_its_rows_and_refuses_more(wide):
    batcher = Batcher(DirectRows(wide), max_batch=1)
    rows = [Row([5, 6, 7], greedy, 10_000, threading.Event()) for _ in range(2)]  # the second waits for room
    for r in rows: batcher.submit(r)
    head = iter(rows[0]); next(head)
    batcher.close()
    assert not batcher.thread and [r.ended for r in rows] == ['cancel', 'cancel']
    late = Row([5], greedy, 3, threading.Event()); batcher.submit(late)
    with pytest.raises(Exception, match='the engine is stopping'): list(late)


EXITS_MID_BATCH = '''
import threading, time, torch
from fc_chatglm.chatglm2 import CHATGLM2_6B_CONFIG, random_chatglm2
from fc_chatglm.decode import Batcher, DirectRows, Row
from fc_chatglm.speedups import prepare
with torch.inference_mode():
    small = {**CHATGLM2_6B_CONFIG, 'num_layers': 2, 'hidden_size': 512, 'ffn_hidden_size': 1024, 'kv_channels': 64,
             'num_attention_heads': 8, 'padded_vocab_size': 1024}
    model = prepare(random_chatglm2(small, seed=1), 'cpu', torch.float32)
batcher = Batcher(DirectRows(model), max_batch=4)
rows = [Row(list(range(5, 40)), lambda logits: logits.argmax(-1), 10_000, threading.Event()) for _ in range(3)]
for r in rows: batcher.submit(r)
tokens = iter(rows[0]); [next(tokens) for _ in range(3)]
time.sleep(0.2)
print('the script ends while its batch steps')
'''

def test_a_process_that_ends_while_its_batch_steps_exits_cleanly(tmp_path):
    "Without the batch closed at exit, the batch thread is torn down inside a step: 'terminate called without an active exception', status 134."
    assert 'the script ends' in ends_cleanly(EXITS_MID_BATCH, tmp_path, timeout=120)
