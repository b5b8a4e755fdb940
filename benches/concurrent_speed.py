"""Aggregate generation tokens/s of CLIENTS streamed OpenAI-style completions at
once, greedy, TOKENS each: total tokens over the wall time from the first request
sent to the last stream's end. Median of RUNS rounds, after one warm-up round.

    python3 benches/concurrent_speed.py NAME BASE_URL MODEL CLIENTS TOKENS RUNS

BASE_URL is what comes before /completions (http://host:port/v1).
"""
import json
import os
import statistics
import sys
import threading
import time
import urllib.request

name, base, model = sys.argv[1], sys.argv[2], sys.argv[3]
clients, tokens, runs = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
headers = {"content-type": "application/json"}
# a worker spawned by the hive takes only its own key (API_KEY, read by the caller
# from the worker's environment)
if os.environ.get("API_KEY"):
    headers["authorization"] = "Bearer " + os.environ["API_KEY"]


def stream(i, out):
    body = json.dumps({"model": model, "prompt": f"Client {i}: 1, 2, 3, 4, 5, 6, 7, 8,",
                       "max_tokens": tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True}).encode()
    req = urllib.request.Request(base + "/completions", body, headers)
    n = 0
    with urllib.request.urlopen(req, timeout=600) as r:
        for raw in r:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                n += 1
    out[i] = n


def round_():
    out = [0] * clients
    threads = [threading.Thread(target=stream, args=(i, out)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return sum(out) / wall, sum(out)


round_()
rates = []
for _ in range(runs):
    rate, total = round_()
    rates.append(rate)
print(f"{name:44s} {clients} clients x {tokens} tokens: "
      f"{statistics.median(rates):7.1f} tokens/s aggregate (median of {runs}; "
      f"min {min(rates):.1f}, max {max(rates):.1f})")
