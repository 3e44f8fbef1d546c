"""Tools and structured output under /v1 (nbs/07a2_structured.ipynb, nbs/07a_openai_api.ipynb) as other people's clients
test them, against a real `python -m fc_chatglm --demo` process on loopback: LangChain's standard chat-model integration
tests through `ChatOpenAI`, with tool calling, tool choice, structured output and JSON mode declared, and the `openai`
SDK's `chat.completions.parse` and a streamed tool call. The demo's weights are random: every call and every JSON reply
is valid because the decoder is constrained, not because the model knows."""
import inspect
import json

import openai
import pydantic
import pytest

from fc_chatglm.testing import ready_connector

langchain_openai = pytest.importorskip('langchain_openai')
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402

HELLO = [{'role': 'user', 'content': '你好'}]
ADD = {'type': 'function', 'function': {'name': 'add', 'description': 'Add two integers', 'parameters': {
    'type': 'object', 'properties': {'a': {'type': 'integer'}, 'b': {'type': 'integer'}}, 'required': ['a', 'b'], 'additionalProperties': False}}}


@pytest.fixture(scope='module')
def base():
    with ready_connector('--demo', '--embedding', 'off') as url: yield url


@pytest.fixture
def client(base):
    with openai.OpenAI(base_url=base + '/v1', api_key='unused', max_retries=0) as c: yield c


class Person(pydantic.BaseModel):
    age: int
    adult: bool
    city: str = pydantic.Field(max_length=12)


def test_parse(client):
    "The SDK's `parse` sends a strict json_schema from a pydantic model, and reads the reply back as that model."
    r = client.chat.completions.parse(model='demo', messages=HELLO, response_format=Person, seed=1, max_tokens=400)
    assert r.choices[0].finish_reason == 'stop' and isinstance(r.choices[0].message.parsed, Person)
    assert len(r.choices[0].message.parsed.city) <= 12


def test_json_object(client):
    "Every reply is a JSON object, greedy or not: one that nears max_tokens closes its strings and braces instead of being cut."
    for seed, temperature in ((0, 1), (1, 1), (0, 0)):
        r = client.chat.completions.create(model='demo', messages=HELLO, seed=seed, temperature=temperature, max_tokens=60,
                                           response_format={'type': 'json_object'})
        assert r.choices[0].finish_reason == 'stop' and isinstance(json.loads(r.choices[0].message.content), dict)


def test_streamed_tool_call(client):
    "A streamed call arrives as OpenAI streams one; the SDK's stream helper assembles it; its result goes back in the history."
    with client.chat.completions.stream(model='demo', messages=HELLO, tools=[ADD], tool_choice='required', seed=2, max_tokens=400) as s:
        for _ in s: pass
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == 'tool_calls' and call.function.name == 'add' and call.id.startswith('call_')
    args = json.loads(call.function.arguments)
    assert sorted(args) == ['a', 'b'] and all(type(v) is int for v in args.values())
    back = client.chat.completions.create(model='demo', seed=2, max_tokens=5, tools=[ADD], messages=HELLO + [
        final.choices[0].message.model_dump(exclude_none=True), {'role': 'tool', 'tool_call_id': call.id, 'content': '3'}])
    assert back.choices[0].finish_reason in ('stop', 'length', 'tool_calls')


def test_refusals(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='demo', messages=HELLO, response_format={
            'type': 'json_schema', 'json_schema': {'name': 'x', 'schema': {'type': 'object', 'if': {'required': ['a']}}}})
    assert e.value.param == 'response_format.json_schema.schema' and '"if"' in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model='demo', messages=HELLO, tool_choice='required')
    assert e.value.param == 'tool_choice'


MEANING = pytest.mark.xfail(strict=False, reason='the demo\'s random weights cannot read the value or the keys the question asks for: '
                                                  'the call or the JSON is valid by construction, what it holds is chance')


class TestChatOpenAIOnDemo(ChatModelIntegrationTests):
    "LangChain's standard integration tests for a chat model, through `ChatOpenAI` pointed at the connector, its features declared."
    @pytest.fixture(autouse=True)
    def _served(self, base): type(self).url = base  # the module's one connector

    @property
    def chat_model_class(self): return langchain_openai.ChatOpenAI

    @property
    def chat_model_params(self):  # a budget, as a client sets one: the random demo model ends an unbounded integer or string only
        return {'model': 'demo', 'base_url': self.url + '/v1', 'api_key': 'unused', 'seed': 1, 'stream_usage': True,  # when it runs out
                'max_tokens': 256}

    has_tool_calling = has_tool_choice = has_structured_output = supports_json_mode = True
    returns_usage_metadata = True
    supports_image_inputs = supports_image_urls = supports_audio_inputs = supports_pdf_inputs = supports_video_inputs = False
    supports_image_tool_message = supports_pdf_tool_message = supports_anthropic_inputs = False

    # what a model must understand, not only write: {"input": 3} from "magic_function(3)", a company's name, a joke's keys,
    # whether to call a tool at all (tool_choice auto: a call is read when the model writes one)
    test_tool_calling = MEANING(ChatModelIntegrationTests.test_tool_calling)
    test_tool_calling_async = MEANING(ChatModelIntegrationTests.test_tool_calling_async)
    test_unicode_tool_call_integration = MEANING(ChatModelIntegrationTests.test_unicode_tool_call_integration)
    test_json_mode = MEANING(ChatModelIntegrationTests.test_json_mode)
    test_tool_calling_with_no_arguments = MEANING(ChatModelIntegrationTests.test_tool_calling_with_no_arguments)
    test_agent_loop = MEANING(ChatModelIntegrationTests.test_agent_loop)
    # a pydantic v1 model goes as a function whose parameters LangChain leaves without `required`: which keys appear is the model's choice
    test_structured_output_pydantic_2_v1 = MEANING(ChatModelIntegrationTests.test_structured_output_pydantic_2_v1)


for _name in dir(ChatModelIntegrationTests):  # the suite's async tests on one pytest-asyncio loop: ChatOpenAI keeps its async client
    if _name.startswith('test_') and inspect.iscoroutinefunction(getattr(ChatModelIntegrationTests, _name)):
        setattr(TestChatOpenAIOnDemo, _name, pytest.mark.asyncio(loop_scope='module')(getattr(TestChatOpenAIOnDemo, _name)))
