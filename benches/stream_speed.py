"""Time to first token and generation tokens/s of a streamed OpenAI-style
completion, greedy, 64 tokens of counting, one request at a time.

    python3 benches/stream_speed.py NAME BASE_URL MODEL RUNS

BASE_URL is what comes before /completions (http://host:port/v1 for a worker,
http://host:port/openai/v1 for the hive). With RUNS 1 it measures one request,
as a cold start does; otherwise the median of RUNS after one warm-up.
"""
import json
import statistics
import sys
import time
import os
import urllib.request

name, base, model, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# a worker spawned by the hive takes only its own key (API_KEY, read by the caller
# from the worker's environment)
headers = {"content-type": "application/json"}
if os.environ.get("API_KEY"):
    headers["authorization"] = "Bearer " + os.environ["API_KEY"]


def stream(n):
    body = json.dumps({"model": model, "prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": n,
                       "temperature": 0, "stream": True, "ignore_eos": True,
                       "cache_prompt": False}).encode()
    req = urllib.request.Request(base + "/completions", body, headers)
    start = time.perf_counter()
    first = None
    tokens = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return (first - start), (tokens - 1) / (end - first) if tokens > 1 else 0.0


if runs > 1:
    stream(4)  # warm up
results = [stream(64) for _ in range(runs)]
ttft = statistics.median(r[0] for r in results) * 1000
tps = statistics.median(r[1] for r in results)
print(f"{name:<40} first token {ttft:8.1f} ms   generation {tps:6.1f} tok/s   ({runs} run{'s' if runs > 1 else ''})")
