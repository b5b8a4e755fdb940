"""The official `openai`, `anthropic` and `ollama` Python clients against one hive of a fleet,
for a model another hive holds. Run by the hive's integration tests:

    python fleet_clients.py HIVE_URL MODEL

Prints one JSON line: the texts each client got (greedy), the stream's chunk counts,
and the hive that answered (`x-rbee-hive`).
"""
import json
import sys

import anthropic
import ollama
import openai

base, model = sys.argv[1], sys.argv[2]
seen = {}
question = [{"role": "user", "content": "What is the capital of France?"}]

client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
seen["openai_models"] = [m.id for m in openai.OpenAI(base_url=f"{base}/openai/v1", api_key="unused").models.list()]
raw = client.chat.completions.with_raw_response.create(
    model=model, messages=question, max_tokens=12, temperature=0
)
seen["openai_hive"] = raw.headers.get("x-rbee-hive")
seen["openai_chat"] = raw.parse().choices[0].message.content

pieces, chunks = [], 0
for chunk in client.chat.completions.create(
    model=model, messages=question, max_tokens=12, temperature=0, stream=True
):
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
seen["openai_stream"] = "".join(pieces)
seen["openai_stream_chunks"] = chunks

pieces, chunks = [], 0
for part in ollama.Client(host=base).chat(
    model=model,
    messages=question,
    stream=True,
    options={"temperature": 0, "num_predict": 12},
):
    chunks += 1
    pieces.append(part["message"]["content"])
seen["ollama_stream"] = "".join(pieces)
seen["ollama_stream_chunks"] = chunks

a = anthropic.Anthropic(base_url=base, api_key="unused")
with a.messages.stream(
    model=model, max_tokens=12, extra_body={"temperature": 0}, messages=question
) as stream:
    kinds = [event.type for event in stream]
    seen["anthropic_stream"] = stream.get_final_message().content[0].text
seen["anthropic_stream_events"] = len(kinds)

print(json.dumps(seen))
