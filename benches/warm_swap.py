"""The first token of a conversation's next turn after its worker was unloaded and
loaded again: with the slot restored from the hive's saved KV cache, against the
same turn on the live worker (warm) and after a reload with no saved cache.

    python3 benches/warm_swap.py HIVE_URL HIVE_HOME MODEL ROUNDS

The conversation is about 2,000 tokens. The load is done and waited for before each
timed turn, so each figure is the turn's own time to its first token.
"""
import json
import shutil
import statistics
import sys
import time
import urllib.request

base, home, model, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
HEADERS = {"content-type": "application/json"}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data, HEADERS, method=method)
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def load():
    job = call("POST", "/v1/models/load", {"id": model})
    while True:
        state = call("GET", f"/v1/jobs/{job['job_id']}")["state"]
        if state in ("completed", "failed", "cancelled"):
            assert state == "completed", state
            return
        time.sleep(0.02)


def first_token(messages):
    """The turn's time to its first token, and the prompt tokens it processed."""
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 8,
                       "temperature": 0, "stream": True}).encode()
    start = time.perf_counter()
    took, processed = None, None
    with urllib.request.urlopen(urllib.request.Request(base + "/v1/chat/completions", body, HEADERS)) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if took is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                took = (time.perf_counter() - start) * 1000
            if chunk.get("timings"):
                processed = chunk["timings"].get("prompt_n")
    assert took is not None, "no token"
    return took, processed


facts = " ".join(f"Item {i} is a fact about the ocean." for i in range(200))


def conversation(tag):
    """A first turn of about 2,000 tokens, answered; the next turn's messages."""
    messages = [{"role": "user", "content": f"{tag}. {facts} Summarize them."}]
    answer = call("POST", "/v1/chat/completions", {"model": model, "messages": messages,
                                                  "max_tokens": 8, "temperature": 0})
    return messages + [answer["choices"][0]["message"], {"role": "user", "content": "And item 7?"}]


def reload(keep_cache):
    call("POST", "/v1/models/unload", {"id": model})
    if not keep_cache:
        shutil.rmtree(f"{home}/kv-cache", ignore_errors=True)
    load()


# each figure is a next turn no worker has seen: a conversation of its own
results = {"warm (the live worker)": [], "reloaded, slot restored": [], "reloaded, no saved cache": []}
load()
for n in range(rounds):
    turn = conversation(f"Round {n}, warm")
    results["warm (the live worker)"].append(first_token(turn))
    turn = conversation(f"Round {n}, restored")
    reload(keep_cache=True)
    results["reloaded, slot restored"].append(first_token(turn))
    turn = conversation(f"Round {n}, uncached")
    reload(keep_cache=False)
    results["reloaded, no saved cache"].append(first_token(turn))

for name, xs in results.items():
    ms = [x[0] for x in xs]
    print(f"{name:<26} first token {statistics.median(ms):8.1f} ms   "
          f"({', '.join(f'{x:.0f}' for x in ms)}; prompt tokens processed {', '.join(str(x[1]) for x in xs)})")
warm = statistics.median(x[0] for x in results["warm (the live worker)"])
print(f"restored / warm: {statistics.median(x[0] for x in results['reloaded, slot restored']) / warm:.2f}x")
