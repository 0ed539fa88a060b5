"""The model proxy's client in its HTTP contract test: Anthropic's own Python SDK, pointed at
the proxy with an attempt's token. Prints one JSON object with what each call gave."""

import json
import sys

import anthropic

url, token, dead_token = sys.argv[1:4]
client = anthropic.Anthropic(base_url=url, api_key=token, max_retries=0)
report = {}

message = client.messages.create(
    model="claude-sonnet-4-5",
    max_tokens=256,
    messages=[{"role": "user", "content": "Say hello"}],
)
report["create"] = {
    "text": message.content[0].text,
    "input_tokens": message.usage.input_tokens,
    "output_tokens": message.usage.output_tokens,
}

with client.messages.stream(
    model="claude-sonnet-4-5",
    max_tokens=256,
    messages=[{"role": "user", "content": "Say hello slowly"}],
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
report["stream"] = {"text": text, "output_tokens": final.usage.output_tokens}

try:
    anthropic.Anthropic(base_url=url, api_key=dead_token, max_retries=0).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=16,
        messages=[{"role": "user", "content": "hi"}],
    )
    report["dead_token"] = "accepted"
except anthropic.AuthenticationError as err:
    report["dead_token"] = {"status": err.status_code, "type": err.body["error"]["type"]}

try:
    client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=16,
        messages=[{"role": "user", "content": "once more"}],
    )
    report["over_budget"] = "accepted"
except anthropic.APIStatusError as err:
    report["over_budget"] = {
        "status": err.status_code,
        "type": err.body["error"]["type"],
        "message": err.body["error"]["message"],
    }

print(json.dumps(report))
