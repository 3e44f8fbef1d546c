"""`python -m fc_chatglm --model <folder>` serves a tiny ChatGLM2 checkpoint in each published layout
(sharded .bin with index, single .bin, safetensors, int4), through the real loader, and answers what
the same folder answers in-process; and a ChatGLM3 folder as ChatGLM3."""
import json

import httpx
import pytest
import torch

from fc_chatglm.chatglm2 import LAYOUTS, chatglm2_config, load_chatglm2, random_chatglm2, save_chatglm2
from fc_chatglm.demo import DEMO_CORPUS, demo_config
from fc_chatglm.testing import app_stream, start_connector, wait_settled
from fc_chatglm.load import LoadOptions, load_engine
from fc_chatglm.quantize import int4_cpu_refusal
from fc_chatglm.schemas import ChatRequest
from fc_chatglm.tokenizer import ChatGLMTokenizer, train_sentencepiece
from transformers import GlmForCausalLM

SETTINGS = {'temperature': 0, 'maxResponseTokens': 12}


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    "A tiny random ChatGLM2 and its tokenizer, to be written in each layout."
    d = tmp_path_factory.mktemp('tok')
    tok = ChatGLMTokenizer(train_sentencepiece(d/'tokenizer.model', DEMO_CORPUS, vocab_size=600, seed=3))
    torch.manual_seed(3)
    return GlmForCausalLM(demo_config(tok.vocab_size)).eval(), d/'tokenizer.model'


@pytest.mark.parametrize('layout', LAYOUTS)
def test_cli_serves_each_published_layout(layout, source, tmp_path):
    model, tokenizer_model = source
    folder = tmp_path/layout
    save_chatglm2(model, folder, layout=layout, shards=3)
    (folder/'tokenizer.model').write_bytes(tokenizer_model.read_bytes())
    cfg = json.loads((folder/'config.json').read_text())
    assert cfg['model_type'] == 'chatglm' and (cfg.get('quantization_bit') == 4) == (layout == 'int4')

    expected = load_engine(LoadOptions(model=folder, device='cpu')).generate(ChatRequest(message='你好', settings=SETTINGS)).text
    proc, base = start_connector('--model', str(folder))
    try:
        h = wait_settled(base)
        assert h['status'] == 'ready', h
        assert h['model'] == 'ChatGLM2'
        r = httpx.post(base + '/chat', json={'message': '你好', 'settings': SETTINGS}).json()
        assert r == {'content': expected, 'isError': False}
        replies, done = app_stream(base, '/chat/stream', json.dumps({'message': '你好', 'settings': SETTINGS}).encode())
        assert done and replies[-1] == expected
    finally:
        proc.kill(); proc.wait()


def test_a_refused_variant_keeps_the_server_up_and_names_the_key(source, tmp_path):
    model, tokenizer_model = source
    save_chatglm2(model, tmp_path, layout='single')
    cfg = json.loads((tmp_path/'config.json').read_text())
    (tmp_path/'config.json').write_text(json.dumps({**cfg, 'pre_seq_len': 128}))
    proc, base = start_connector('--model', str(tmp_path))
    try:
        h = wait_settled(base)
        assert h['status'] == 'failed' and 'pre_seq_len' in h['error']
        r = httpx.post(base + '/chat', json={'message': 'hi'}).json()
        assert r['isError'] and 'pre_seq_len' in r['content']
    finally:
        proc.kill(); proc.wait()


def test_cli_serves_chatglm3_with_its_prompt(tmp_path):
    "A ChatGLM3 folder (nine specials, its published name) is served as ChatGLM3, with its own prompt."
    tok = ChatGLMTokenizer(train_sentencepiece(tmp_path/'tokenizer.model', DEMO_CORPUS, vocab_size=600, seed=3), roles=True)
    torch.manual_seed(3)
    save_chatglm2(GlmForCausalLM(demo_config(tok.vocab_size)).eval(), tmp_path, layout='safetensors', shards=2)
    cfg = json.loads((tmp_path/'config.json').read_text())
    (tmp_path/'config.json').write_text(json.dumps({'_name_or_path': 'THUDM/chatglm3-6b', **cfg}))
    body = {'message': '你好', 'history': [{'role': 'system', 'content': 'Be brief.'}], 'settings': SETTINGS}
    engine = load_engine(LoadOptions(model=tmp_path, device='cpu'))
    assert engine.prompt_ids(ChatRequest(**body), 12)[0][2] == tok.special['<|system|>']
    expected = engine.generate(ChatRequest(**body)).text
    proc, base = start_connector('--model', str(tmp_path))
    try:
        h = wait_settled(base)
        assert h['status'] == 'ready' and h['model'] == 'ChatGLM3', h
        assert httpx.post(base + '/chat', json=body).json() == {'content': expected, 'isError': False}
    finally:
        proc.kill(); proc.wait()


def test_float32_gives_the_int4_checkpoint_float32_maths(source, tmp_path):
    """`--dtype float32` on a CPU answers with the greedy reply of the int4 weights unpacked to float32 (as ChatGLM2's own
    code computes them on a CPU), here loaded as a float checkpoint; torch's int4 kernel, which multiplies in bfloat16,
    departs from it within a few tokens on these wide weights (`std=0.1`)."""
    model, tokenizer_model = source
    q4 = save_chatglm2(random_chatglm2(chatglm2_config(model.config), seed=0, std=0.1), tmp_path/'int4', layout='int4')
    unpacked = load_chatglm2(json.loads((q4/'config.json').read_text()), [q4/'pytorch_model.bin'], dtype=torch.float32)
    f32 = save_chatglm2(unpacked, tmp_path/'float32', layout='safetensors')
    for f in (q4, f32): (f/'tokenizer.model').write_bytes(tokenizer_model.read_bytes())
    req = ChatRequest(message='你好', settings={'temperature': 0, 'maxResponseTokens': 30})
    reply = lambda folder, dtype: load_engine(LoadOptions(model=folder, device='cpu', dtype=dtype)).generate(req).text
    exact = load_engine(LoadOptions(model=q4, device='cpu', dtype='float32'))
    assert {type(m).__name__ for m in exact.model.modules()} & {'Int4Linear', 'Int4CpuLinear'} == set()
    assert exact.generate(req).text == reply(f32, 'float32')
    if int4_cpu_refusal() is None:  # the kernel runs here: `auto` keeps it, and its reply is bfloat16's
        assert reply(q4, 'bfloat16') != reply(f32, 'float32')
