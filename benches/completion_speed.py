"""Prompt and generation tokens/s of an OpenAI-style completions server, greedy,
the median of three runs: a 60-sentence prompt for prompt speed, 64 tokens of
counting for generation speed (less the time of the first token).

    python3 benches/completion_speed.py NAME URL
"""
import json
import statistics
import sys
import time
import os
import urllib.request

name, url = sys.argv[1], sys.argv[2]
# a worker spawned by the hive takes only its own key (API_KEY, read by the caller
# from the worker's environment)
headers = {"content-type": "application/json"}
if os.environ.get("API_KEY"):
    headers["authorization"] = "Bearer " + os.environ["API_KEY"]


def complete(prompt, n):
    body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0,
                       "cache_prompt": False, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, headers)
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        v = json.load(r)
    return time.perf_counter() - t, v["usage"]


long_prompt = " ".join(f"Item {i} is a small red box." for i in range(60))
count = "1, 2, 3, 4, 5, 6, 7, 8,"
complete(count, 4)  # warm up
runs = []
for _ in range(3):
    t_prompt, u_prompt = complete(long_prompt, 1)
    t1, _ = complete(count, 1)
    t64, u64 = complete(count, 64)
    runs.append((u_prompt["prompt_tokens"] / t_prompt, (u64["completion_tokens"] - 1) / (t64 - t1),
                 u64["completion_tokens"], u_prompt["prompt_tokens"]))
pp = statistics.median(r[0] for r in runs)
tg = statistics.median(r[1] for r in runs)
print(f"{name:<37} prompt {pp:8.1f} tok/s ({runs[0][3]}-token prompt)   "
      f"generation {tg:6.1f} tok/s ({runs[0][2]} tokens, greedy)")
