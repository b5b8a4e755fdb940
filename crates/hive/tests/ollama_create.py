"""Ollama's `/api/create` and `/api/copy` through the official `ollama` client, on a
running hive with a real model:

    python ollama_create.py HIVE_URL MODEL_ALIAS

A model made with a system prompt and parameters answers as its base does when the
same system prompt is sent by hand; its copy answers the same. What cannot be
honoured is refused. Each check raises on a wrong answer; the last line printed is a
JSON summary.
"""
import json
import sys

import ollama

base, alias = sys.argv[1], sys.argv[2]
client = ollama.Client(host=base)
seen = {}
SYSTEM = "You are a pirate. Answer every question like a pirate."
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]

made = client.create(model="pirate", from_=alias, system=SYSTEM,
                     parameters={"temperature": 0, "num_predict": 12})
assert made.status == "success", made
assert client.copy("pirate", "parrot").status == "success"
names = [m.model for m in client.list().models]
assert "pirate:latest" in names and "parrot:latest" in names, names
seen["names"] = names

shown = client.show("pirate")
assert "SYSTEM" in shown.modelfile and "pirate" in shown.modelfile, shown.modelfile
assert "temperature" in (shown.parameters or ""), shown.parameters
seen["parameters"] = shown.parameters

# the made model: its system prompt and parameters, sent by nobody
mine = client.chat(model="pirate", messages=QUESTION)
by_hand = client.chat(model=alias, messages=[{"role": "system", "content": SYSTEM}] + QUESTION,
                      options={"temperature": 0, "num_predict": 12})
bare = client.chat(model=alias, messages=QUESTION, options={"temperature": 0, "num_predict": 12})
assert mine.message.content == by_hand.message.content, (mine.message.content, by_hand.message.content)
assert mine.prompt_eval_count == by_hand.prompt_eval_count, (mine.prompt_eval_count, by_hand.prompt_eval_count)
# (SmolLM2's template puts a default system prompt of its own where none is sent)
assert mine.prompt_eval_count != bare.prompt_eval_count, (mine.prompt_eval_count, bare.prompt_eval_count)
assert mine.eval_count <= 12, mine.eval_count
copied = client.chat(model="parrot", messages=QUESTION)
assert copied.message.content == mine.message.content
# a request's own system prompt and options win
own = client.chat(model="pirate", messages=[{"role": "system", "content": "Answer in French."}] + QUESTION,
                  options={"num_predict": 3})
assert own.eval_count <= 3 and own.prompt_eval_count != mine.prompt_eval_count, own
seen["answer"] = mine.message.content
seen["prompt_tokens"] = [mine.prompt_eval_count, bare.prompt_eval_count]

# a Modelfile, as older clients send it
r = client._request_raw("POST", "/api/create", json={
    "model": "captain", "stream": False,
    "modelfile": f'FROM pirate\nSYSTEM """{SYSTEM}"""\nPARAMETER temperature 0\nPARAMETER num_predict 12\n'})
assert r.status_code == 200, r.text
assert client.chat(model="captain", messages=QUESTION).message.content == mine.message.content

def refused(status, words, call):
    try:
        call()
    except ollama.ResponseError as e:
        assert e.status_code == status and words in e.error, (status, words, e.status_code, e.error)
        return e.error
    raise AssertionError(f"not refused: {words}")

seen["refused"] = [
    refused(400, "Go template", lambda: client.create(model="t", from_=alias, template="{{ .Prompt }}")),
    refused(400, "num_ctx", lambda: client.create(model="t", from_=alias, parameters={"num_ctx": 8192})),
    refused(400, "unknown parameter", lambda: client.create(model="t", from_=alias, parameters={"mirostat": 1})),
    refused(400, "files", lambda: client.create(model="t", files={"x.gguf": "sha256:" + "0" * 64})),
    refused(404, "not found", lambda: client.create(model="t", from_="nothing-here")),
    refused(409, "a model of its own", lambda: client.create(model=alias, from_="pirate")),
    refused(409, "a model of its own", lambda: client.copy("pirate", alias)),
    refused(404, "not found", lambda: client.copy("nothing-here", "t")),
    refused(400, "a reference to pull", lambda: client.copy("pirate", "hf:someone")),
    refused(400, "alias", lambda: client.copy("pirate", "a b")),
    refused(409, "made over", lambda: client.delete(alias)),
]
names_after = [m.model for m in client.list().models]
assert "t:latest" not in names_after, names_after

for name in ["pirate", "parrot", "captain"]:
    assert client.delete(name).status == "success"
assert [m.model for m in client.list().models] == [alias], client.list()
print(json.dumps(seen))
