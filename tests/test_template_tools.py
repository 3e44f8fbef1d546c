"""Tools through a chat template's own `tools` argument (nbs/06_load.ipynb's `TemplateFormat`, nbs/07a2_structured.ipynb's
`HermesToolFormat`, nbs/01_history.ipynb's `Turn`s), over the real HTTP `/v1` route: a tiny Llama whose byte-level tokenizer
carries a small Hermes-style Jinja template written here, loaded by `load_engine` and served on a loopback socket. Its weights
are random: a forced call is valid because the decoder is constrained; the prompt is what the template wrote."""
import json
import threading

import openai
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from fc_chatglm.engine import Engine, Outcome
from fc_chatglm.load import LoadOptions, load_engine
from fc_chatglm.openai_api import add_openai, model_id
from fc_chatglm.server import create_app
from fc_chatglm.structured import HermesToolFormat, tool_format
from fc_chatglm.testing import serve_in_thread
from fc_chatglm.worker import ModelHost

SPECIALS = ['<|im_start|>', '<|im_end|>']
HERMES = (  # Qwen2.5's layout, shortened: the tools in the system turn, calls in <tool_call> blocks, results as <tool_response>
    "{% if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    'Call one as <tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}<|im_start|>user\n{{ m.content }}<|im_end|>\n"
    "{% elif m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n'
    "{% elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n</tool_response><|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
ADD = {'type': 'function', 'function': {'name': 'add', 'description': 'Add two integers', 'parameters': {
    'type': 'object', 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'integer'}}, 'required': ['a', 'b'], 'additionalProperties': False}}}
ASK = [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'What is 1 + 2?'}]


def tiny_template_model(folder):
    "A 2-layer Llama with a byte-level tokenizer (every text spelled, as a constrained decoder needs) and the `HERMES` template."
    byte_vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    t = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    t.pre_tokenizer, t.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False), decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, eos_token='<|im_end|>', additional_special_tokens=SPECIALS)
    tok.chat_template = HERMES
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=4096, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id).save_pretrained(folder)
    return folder


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "The model behind a real socket; yields (base URL, engine, the prompts its template wrote)."
    engine = load_engine(LoadOptions(model=tiny_template_model(tmp_path_factory.mktemp('hermes')), device='cpu'))
    prompts, own = [], engine.fmt.chat_ids
    engine.fmt.chat_ids = lambda conv: prompts.append(ids := own(conv)) or ids  # what the template wrote, to read back
    host = ModelHost(); host.ready(engine)
    server, base = serve_in_thread(add_openai(create_app(host)))
    yield base, engine, prompts
    server.should_exit = True


@pytest.fixture
def client(served):
    with openai.OpenAI(base_url=served[0] + '/v1', api_key='unused', max_retries=0) as c: yield c


def prompt(served) -> str:
    "The last prompt, as text, special tokens kept."
    return served[1].fmt.tok.decode(served[2][-1], skip_special_tokens=False)


def test_the_template_reads_tools_and_asks_for_hermes_calls(served):
    fmt = served[1].fmt
    assert fmt.tools and isinstance(tool_format(fmt), HermesToolFormat)


def test_tools_are_written_by_the_template(served, client):
    client.chat.completions.create(model=model_id(served[1].name), messages=ASK, tools=[ADD], max_tokens=1, temperature=0)
    text = prompt(served)
    assert text.startswith('<|im_start|>system\nBe brief.\n\n# Tools\n<tools>\n{"type": "function", "function": {"name": "add"')
    assert '"required": ["a", "b"]' in text and text.endswith('<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n')
    assert 'You can call these functions' not in text  # the JSON format's words in the system message: not for a template with tools


@pytest.mark.parametrize('choice', ['required', {'type': 'function', 'function': {'name': 'add'}}])
def test_a_forced_call_is_a_hermes_block_read_back_as_tool_calls(served, client, choice):
    r = client.chat.completions.create(model=model_id(served[1].name), messages=ASK, tools=[ADD], tool_choice=choice, seed=3, max_tokens=400)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == 'tool_calls' and len(r.choices[0].message.tool_calls) == 1 and call.function.name == 'add'
    args = json.loads(call.function.arguments)
    assert sorted(args) == ['a', 'b'] and all(type(v) is int for v in args.values())


def test_a_streamed_forced_call(served, client):
    with client.chat.completions.stream(model=model_id(served[1].name), messages=ASK, tools=[ADD], tool_choice='required', seed=4, max_tokens=400) as s:
        for _ in s: pass
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == 'tool_calls' and call.function.name == 'add' and call.id.startswith('call_')
    assert sorted(json.loads(call.function.arguments)) == ['a', 'b']


def test_parallel_tool_calls_lets_a_forced_reply_hold_several_blocks(served, client):
    r = client.chat.completions.create(model=model_id(served[1].name), messages=ASK, tools=[ADD], tool_choice='required',
                                       parallel_tool_calls=True, seed=5, max_tokens=600)
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == 'tool_calls' and len(calls) >= 1 and len({c.id for c in calls}) == len(calls)
    assert all(c.function.name == 'add' and sorted(json.loads(c.function.arguments)) == ['a', 'b'] for c in calls)


def test_a_round_trip_writes_the_call_and_its_result_as_the_template_does(served, client):
    called = {'role': 'assistant', 'content': None, 'tool_calls': [
        {'id': 'call_7', 'type': 'function', 'function': {'name': 'add', 'arguments': '{"a": 1, "b": 2}'}}]}
    r = client.chat.completions.create(model=model_id(served[1].name), tools=[ADD], max_tokens=3, temperature=0, messages=ASK + [
        called, {'role': 'tool', 'tool_call_id': 'call_7', 'content': '3'}])
    assert r.choices[0].finish_reason in ('stop', 'length')
    assert prompt(served).endswith(
        '<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n'
        '<|im_start|>assistant\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n3\n</tool_response><|im_end|>\n<|im_start|>assistant\n')
    again = client.chat.completions.create(model=model_id(served[1].name), max_tokens=3, temperature=0, messages=ASK + [  # without tools
        called, {'role': 'tool', 'tool_call_id': 'call_7', 'content': '3'}, {'role': 'assistant', 'content': 'It is 3.'},
        {'role': 'user', 'content': 'Thanks'}])
    assert again.choices[0].finish_reason in ('stop', 'length') and '<tools>' not in prompt(served)
    assert '<tool_response>\n3\n</tool_response>' in prompt(served)


def test_auto_gives_text_from_a_model_that_writes_no_call(served, client):
    r = client.chat.completions.create(model=model_id(served[1].name), messages=ASK, tools=[ADD], seed=1, max_tokens=8)
    assert r.choices[0].finish_reason in ('stop', 'length') and r.choices[0].message.tool_calls is None
    assert isinstance(r.choices[0].message.content, str)


class Scripted(Engine):
    "The template model's format around a fixed reply: what a trained model writes with `auto`."
    def __init__(self, fmt, reply: str): self.fmt, self.reply, self.name = fmt, reply, 'scripted'
    def generate(self, request, cancel: threading.Event, on_text, constrain=None) -> Outcome:
        assert constrain is None  # auto: nothing forces the reply
        on_text(self.reply); return Outcome(self.reply, 'stop', 1, 1)


@pytest.mark.parametrize('reply, calls', [
    ('Let me add.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>', [('add', {'a': 1, 'b': 2})]),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 4}}\n</tool_call>',
     [('add', {'a': 1, 'b': 2}), ('add', {'a': 3, 'b': 4})]),
    ('It is 3.', []),
    ('<tool_call>\n{"name": "sub", "arguments": {"a": 1}}\n</tool_call>', []),  # a function the request does not offer: text
])
def test_auto_reads_a_call_where_the_model_writes_one(served, reply, calls):
    host = ModelHost(); host.ready(Scripted(served[1].fmt, reply))
    server, base = serve_in_thread(add_openai(create_app(host)))
    try:
        with openai.OpenAI(base_url=base + '/v1', api_key='unused', max_retries=0) as c:
            for stream in (False, True):
                if stream:
                    with c.chat.completions.stream(model='scripted', messages=ASK, tools=[ADD]) as s:
                        for _ in s: pass
                        r = s.get_final_completion()
                else: r = c.chat.completions.create(model='scripted', messages=ASK, tools=[ADD])
                m = r.choices[0].message
                assert [(t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls or []] == calls
                assert r.choices[0].finish_reason == ('tool_calls' if calls else 'stop') and (not m.content if calls else m.content == reply)
    finally: server.should_exit = True
