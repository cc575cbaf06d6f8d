#!/usr/bin/env python3
"""A backend pushing to browsers through `wsevents serve`'s HTTP API (docs/api.md): one
POST to /api/publish, with the API key, the standard library only.

    python3 backend_publish.py http://127.0.0.1:8080 api-keys.txt news "hello"

Prints the publication's position ({"epoch": ..., "offset": ...}) and exits 0; an error
answer ({"error": {"code", "message"}}) is printed to stderr and exits 1. The key is the
first line of the key file (the file `serve --api-key-file` reads).
"""

import json
import sys
import urllib.error
import urllib.request


def publish(base, key, topic, data):
    body = json.dumps({"topic": topic, "data": data}).encode()
    request = urllib.request.Request(
        base.rstrip("/") + "/api/publish", data=body, method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    base, key_file, topic, data = sys.argv[1:]
    with open(key_file) as f:
        key = f.readline().strip()
    try:
        print(json.dumps(publish(base, key, topic, data)))
    except urllib.error.HTTPError as error:
        print(f"{error.code}: {error.read().decode(errors='replace')}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
