"""The official `openai`, `anthropic` and `ollama` Python clients against a running
hive's one endpoint. Run by the hive's integration tests:

    python clients.py HIVE_URL MODEL_ALIAS PULL_REFERENCE ARCHITECTURE

Each check raises on a wrong answer; the last line printed is a JSON summary.
"""
import json
import sys

import anthropic
import ollama
import openai

base, alias, pull_ref, arch = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
seen = {}

# --- openai ---------------------------------------------------------------
client = openai.OpenAI(base_url=f"{base}/openai/v1", api_key="unused")
ids = [m.id for m in client.models.list()]
assert alias in ids, ids
seen["openai_models"] = ids

chat = client.chat.completions.create(
    model=alias,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    extra_body={"temperature": 0},
)
text = chat.choices[0].message.content
assert isinstance(text, str) and text.strip(), chat
seen["openai_chat"] = text

pieces = []
for chunk in client.chat.completions.create(
    model=alias,
    messages=[{"role": "user", "content": "Count from one to five."}],
    max_tokens=16,
    extra_body={"temperature": 0},
    stream=True,
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
assert len(pieces) > 1, pieces
seen["openai_stream_chunks"] = len(pieces)

done = client.completions.create(model=alias, prompt="The capital of France is", max_tokens=8, temperature=0)
assert done.choices[0].text.strip(), done
seen["openai_completion"] = done.choices[0].text

try:
    client.chat.completions.create(model="no-such-model:q4", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was answered")
except openai.NotFoundError as e:
    assert "not in this hive" in str(e), e

# --- openai at /v1, where Ollama, LM Studio and llama-server serve it --------
v1 = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
listed = list(v1.models.list())
# the hive's own list, in OpenAI's shape: the catalog's fields ride beside
by_alias = {getattr(m, "alias", None): m for m in listed}
assert alias in by_alias, [m.id for m in listed]
entry = by_alias[alias]
assert entry.object == "model" and entry.created > 0 and entry.owned_by, entry
assert v1.models.retrieve(entry.id).id == entry.id
seen["v1_models"] = [m.id for m in listed]
v1_chat = v1.chat.completions.create(
    model=alias,
    messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=12,
    extra_body={"temperature": 0},
)
# the same model answers at both paths (the words may differ: with several slots
# and a reused prompt cache, llama.cpp's greedy text is not the same run to run)
assert v1_chat.model == chat.model, (v1_chat, chat)
assert v1_chat.choices[0].message.content.strip(), v1_chat
v1_pieces = [
    c.choices[0].delta.content
    for c in v1.chat.completions.create(
        model=entry.id,
        messages=[{"role": "user", "content": "Count from one to five."}],
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    if c.choices and c.choices[0].delta.content
]
assert "".join(v1_pieces) == "".join(pieces), (v1_pieces, pieces)

# --- anthropic: the Messages API at /v1/messages ---------------------------
a = anthropic.Anthropic(base_url=base, api_key="unused")
msg = a.messages.create(
    model=alias,
    max_tokens=12,
    extra_body={"temperature": 0},
    system="You are terse.",
    messages=[{"role": "user", "content": "What is the capital of France?"}],
)
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.content and msg.content[0].type == "text" and msg.content[0].text.strip(), msg
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg.usage
seen["anthropic_message"] = msg.content[0].text
kinds = []
streamed = []
with a.messages.stream(
    model=alias,
    max_tokens=16,
    extra_body={"temperature": 0},
    messages=[{"role": "user", "content": "Count from one to five."}],
) as stream:
    for event in stream:
        kinds.append(event.type)
    streamed = stream.get_final_message()
# Anthropic's event sequence, passed through unbuffered
assert kinds[0] == "message_start" and "content_block_delta" in kinds and kinds[-1] == "message_stop", kinds
assert streamed.content[0].text.strip(), streamed
seen["anthropic_stream_events"] = len(kinds)
counted = a.messages.count_tokens(
    model=alias, messages=[{"role": "user", "content": "What is the capital of France?"}]
)
assert counted.input_tokens > 0, counted
weather = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
called = a.messages.create(
    model=alias,
    max_tokens=64,
    extra_body={"temperature": 0},
    tools=[weather],
    tool_choice={"type": "tool", "name": "get_weather"},
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
)
# the tools reach the engine and the answer is a message; whether a model this small
# calls the tool is its chat template's affair (SmolLM2's and Gemma 3's have none)
assert called.type == "message" and called.stop_reason in ("tool_use", "end_turn", "max_tokens"), called
uses = [b for b in called.content if b.type == "tool_use"]
if uses:
    assert uses[0].name == "get_weather" and isinstance(uses[0].input, dict), called
else:
    uses = [anthropic.types.ToolUseBlock(type="tool_use", id="toolu_1", name="get_weather", input={"city": "Paris"})]
answered = a.messages.create(
    model=alias,
    max_tokens=16,
    extra_body={"temperature": 0},
    tools=[weather],
    messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"}]},
    ],
)
assert answered.type == "message" and answered.content, answered
seen["anthropic_tool_round_trip"] = [b.type for b in called.content]
try:
    a.messages.create(model="no-such-model:q4", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was answered")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body

# --- ollama ---------------------------------------------------------------
o = ollama.Client(host=base)
names = [m.model for m in o.list().models]
assert alias in names, names
seen["ollama_list"] = names

info = o.show(alias)
assert info.details.family == arch, info.details
assert info.modelinfo["general.architecture"] == arch, info.modelinfo

reply = o.chat(model=alias, messages=[{"role": "user", "content": "Say hello."}], options={"temperature": 0, "num_predict": 12})
assert reply.message.content.strip(), reply
assert reply.done and reply.eval_count and reply.eval_count > 0, reply
seen["ollama_chat"] = reply.message.content

chunks = list(
    o.chat(
        model=alias,
        messages=[{"role": "user", "content": "Name three colours."}],
        stream=True,
        options={"temperature": 0, "num_predict": 16},
    )
)
parts = [p.message.content for p in chunks]
assert len(parts) > 2 and "".join(parts).strip(), parts
# the durations Ollama's clients work out tokens/s from (`ollama run --verbose`)
last = chunks[-1]
assert last.done and last.eval_count and last.eval_duration and last.eval_duration > 0, last
assert last.prompt_eval_duration is not None and last.prompt_eval_duration > 0, last
seen["ollama_stream_chunks"] = len(parts)

gen = o.generate(model=alias, prompt="The capital of France is", options={"temperature": 0, "num_predict": 8}, keep_alive="10m")
assert gen.response.strip() and gen.done, gen
seen["ollama_generate"] = gen.response

# a generate goes through the model's chat template (as Ollama's does) unless raw:
# the prompt the engine sees is the one its own chat route makes of that question
question = "What is the capital of France?"
templated = o.generate(model=alias, prompt=question, options={"temperature": 0, "num_predict": 12})
assert templated.response.strip(), templated
as_chat = client.chat.completions.create(
    model=alias, messages=[{"role": "user", "content": question}], max_tokens=12, temperature=0
)
# the same prompt tokens (the words may differ: several slots and a reused prompt
# cache make llama.cpp's greedy text vary run to run)
assert templated.prompt_eval_count == as_chat.usage.prompt_tokens, (templated, as_chat.usage)
bare = o.generate(model=alias, prompt=question, raw=True, options={"temperature": 0, "num_predict": 12})
assert bare.prompt_eval_count < templated.prompt_eval_count, (bare, templated)
with_system = o.generate(model=alias, prompt=question, system="Answer in one word.", options={"temperature": 0, "num_predict": 4})
system_chat = client.chat.completions.create(
    model=alias,
    messages=[{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": question}],
    max_tokens=4,
    extra_body={"temperature": 0},
)
assert with_system.prompt_eval_count == system_chat.usage.prompt_tokens, (with_system, system_chat.usage)
for bad in [dict(raw=True, template="{{ .Prompt }}"), dict(suffix="}"), dict(images=["aGk="])]:
    try:
        o.generate(model=alias, prompt=question, **bad)
        raise AssertionError(f"{bad} was answered")
    except ollama.ResponseError as e:
        assert e.status_code == 400, e
seen["ollama_generate_templated"] = templated.response

shaped = o.generate(model=alias, prompt="Describe a cat as JSON.", format="json", options={"temperature": 0, "num_predict": 24})
assert shaped.response.lstrip().startswith("{"), shaped.response
seen["ollama_json"] = shaped.response

running = [m.model for m in o.ps().models]
assert alias in running, running

try:
    o.chat(model=alias, messages=[{"role": "user", "content": "hi"}], keep_alive="soon")
    raise AssertionError("a keep_alive that is no duration was taken")
except ollama.ResponseError as e:
    assert e.status_code == 400 and "keep_alive" in e.error, e

statuses = [p.status for p in o.pull(pull_ref, stream=True)]
assert statuses[0] == "pulling manifest" and statuses[-1] == "success", statuses
seen["ollama_pull"] = statuses
pulled = [m.model for m in o.list().models if m.model != alias]
assert len(pulled) == 1, pulled
o.delete(pulled[0])
assert [m.model for m in o.list().models] == [alias]

try:
    o.show("no-such-model")
    raise AssertionError("an unknown model was shown")
except ollama.ResponseError as e:
    assert e.status_code == 404, e

print(json.dumps(seen))
