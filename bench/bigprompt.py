"""Sends 100,000-token chat prompts back to back for a while (for the bigprompt scenario).

    python bench/bigprompt.py --url http://127.0.0.1:8080/v1/chat/completions --seconds 10
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request

# "The quick brown fox. " is 5 tokens in o200k_base: 20,000 of them make 100,000 tokens.
PROMPT = "The quick brown fox. " * 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    body = json.dumps({"model": "gpt-4o-mini", "max_tokens": 16,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    deadline, sent = time.time() + args.seconds, 0
    while time.time() < deadline:
        request = urllib.request.Request(args.url, data=body, headers={
            "content-type": "application/json", "authorization": "Bearer sk-bench", "x-session-id": "big-prompt"})
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()
        sent += 1
    print(json.dumps({"big_prompts": sent}))


if __name__ == "__main__":
    main()
