"""`rbee run MODEL PROMPT` from the command to its first token on stdout, against
the engine's own first token (a streamed chat straight to the worker), the same
prompt and the same loaded worker, one at a time:

    python3 benches/run_first_token.py RBEE WORKER_URL MODEL RUNS

RBEE is the `rbee` binary (it finds the hive by RBEE_HIVE_URL); the worker's key
comes in API_KEY. Medians of RUNS after one warm-up each.
"""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

rbee, worker, model, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
PROMPT = "Write the numbers from 1 to 100, separated by commas."


def rbee_run():
    start = time.perf_counter()
    p = subprocess.Popen([rbee, "run", model, PROMPT, "--parameter", "num_predict=16",
                          "--parameter", "temperature=0"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = p.stdout.read(1)
    elapsed = time.perf_counter() - start
    p.stdout.read()
    assert p.wait() == 0 and first, "rbee run failed"
    return elapsed


def engine():
    body = json.dumps({"model": model, "max_tokens": 16, "temperature": 0, "stream": True,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    headers = {"content-type": "application/json",
               "authorization": "Bearer " + os.environ.get("API_KEY", "")}
    start = time.perf_counter()
    first = None
    with urllib.request.urlopen(urllib.request.Request(worker + "/v1/chat/completions", body, headers)) as r:
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("data:") and line != "data: [DONE]":
                chunk = json.loads(line[5:])
                if first is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
    return first


rbee_run(), engine()  # warm up
ours = statistics.median(rbee_run() for _ in range(runs)) * 1000
theirs = statistics.median(engine() for _ in range(runs)) * 1000
print(f"rbee run, command to first token        {ours:8.1f} ms   ({runs} runs)")
print(f"the engine's own first token            {theirs:8.1f} ms   ({runs} runs)")
print(f"beyond the engine's                     {ours - theirs:8.1f} ms")
