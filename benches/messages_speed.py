"""Time to first token and generation tokens/s of a streamed Anthropic Messages
request, greedy, 64 tokens, one request at a time:

    python3 benches/messages_speed.py NAME BASE_URL MODEL RUNS

BASE_URL is what comes before /v1/messages (the hive's address, or a worker's).
The median of RUNS after one warm-up. Each `content_block_delta` with text is a
token, as llama-server sends one per token.
"""
import json
import os
import statistics
import sys
import time
import urllib.request

name, base, model, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
headers = {"content-type": "application/json", "anthropic-version": "2023-06-01"}
if os.environ.get("API_KEY"):
    headers["x-api-key"] = os.environ["API_KEY"]


def stream(n):
    body = json.dumps({
        "model": model, "max_tokens": n, "stream": True, "temperature": 0,
        # a prompt SmolLM2 answers past 64 tokens (llama.cpp's Messages route does not
        # take ignore_eos)
        "messages": [{"role": "user", "content": "Write the numbers from 1 to 100, separated by commas."}],
    }).encode()
    req = urllib.request.Request(base + "/v1/messages", body, headers)
    start = time.perf_counter()
    first = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if event.get("type") == "content_block_delta" and event["delta"].get("text"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return (first - start), (tokens - 1) / (end - first) if tokens > 1 else 0.0, tokens


stream(4)  # warm up
results = [stream(64) for _ in range(runs)]
ttft = statistics.median(r[0] for r in results) * 1000
tps = statistics.median(r[1] for r in results)
toks = statistics.median(r[2] for r in results)
print(f"{name:<40} first token {ttft:8.1f} ms   generation {tps:6.1f} tok/s   ({runs} runs, {toks:.0f} tokens)")
