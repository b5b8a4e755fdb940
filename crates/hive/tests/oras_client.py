"""The oras Python client against a registry on loopback, for the OCI tests.

    oras_client.py pull REGISTRY/REPO:TAG OUTDIR
    oras_client.py push REGISTRY/REPO:TAG FILE[:MEDIA_TYPE]...

Prints one JSON line: the files pulled, or the pushed manifest's response status.
"""

import json
import os
import sys

import oras.client


def main():
    command, target = sys.argv[1], sys.argv[2]
    host = target.split("/", 1)[0]
    client = oras.client.OrasClient(hostname=host, insecure=True)
    if command == "pull":
        outdir = sys.argv[3]
        files = client.pull(target=target, outdir=outdir)
        print(json.dumps({"files": [os.path.abspath(f) for f in files]}))
    elif command == "push":
        # paths relative to the files' folder, as oras titles them
        files = [f.split(":", 1) for f in sys.argv[3:]]
        os.chdir(os.path.dirname(files[0][0]) or ".")
        names = [":".join([os.path.basename(f[0])] + f[1:]) for f in files]
        response = client.push(target=target, files=names, disable_path_validation=True)
        print(json.dumps({"status": response.status_code}))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
