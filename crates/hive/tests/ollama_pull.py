"""A pull through the official `ollama` client, as `ollama pull NAME` does it:

    python ollama_pull.py HIVE_URL NAME

Streams the progress, and prints the last status as JSON.
"""
import json
import sys

import ollama

base, name = sys.argv[1], sys.argv[2]
last = None
for progress in ollama.Client(host=base).pull(name, stream=True):
    last = progress
assert last is not None and last.status == "success", last
print(json.dumps({"status": last.status}))
