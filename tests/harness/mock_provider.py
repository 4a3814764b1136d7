"""A scripted mock LLM provider speaking the OpenAI, Anthropic, Gemini and Bedrock Converse APIs:
JSON, SSE and AWS event-stream answers.

Each request is scripted by its own `x-mock-*` headers (they pass through the gateway):

  x-mock-status: 500          answer with this status and an OpenAI/Anthropic-style error body
  x-mock-latency-ms: 50       wait before the answer headers
  x-mock-slow-model: m=300    wait 300 ms more when the request's model is m (routing tests)
  x-mock-fail-model: m=503    answer with this status when the request's model is m (fallback tests;
                              several: m1=503,m2=429)
  x-mock-text: ...            the generated text, percent-decoded (default: "The capital of France is Paris.")
  x-mock-tool-calls: [...]    percent-encoded JSON list of {"name", "arguments": {...}}: the answer calls
                              these tools after its text (chat and messages, JSON and streams; streamed
                              arguments come in pieces of x-mock-piece-chars, default 8)
  x-mock-usage: off           leave usage out (JSON and streams)
  x-mock-prompt-tokens: 17    usage numbers to report (defaults: 21 prompt, 7 completion, 0 cached)
  x-mock-completion-tokens: 5
  x-mock-cached-tokens: 3
  x-mock-reasoning-tokens: 2
  x-mock-chunk-bytes: 7       write the body in chunks of this many bytes (odd SSE boundaries)
  x-mock-piece-chars: 3       stream the text in pieces of this many characters (one per event)
  x-mock-chunk-delay-ms: 5    pause between chunks
  x-mock-reset-after: 120     abort the connection after this many body bytes
  x-mock-gzip: on             gzip the answer body (content-encoding: gzip)
  x-mock-raw: ...             send this text as the body, verbatim (malformed answers)
  x-mock-content-type: ...    override the content type
  x-mock-corrupt-at: 40       flip one bit of this byte of a stream (damage in transit)

Scripted guard services (the guard module's tests) read markers in the texts they judge:

  POST /v1/moderations        OpenAI moderation: every category scores 0.001 unless a text holds
                              [[score:violence=0.93]] (several: [[score:hate=0.6,violence=0.2]]);
                              `flagged` and `categories` say score >= 0.5
  POST /guard/v1/chat/completions  a Llama Guard-style chat guard: `unsafe` and the categories
                              of [[unsafe:S1,S10]] in the judged (last) message, else `safe`
  POST /guard                 the webhook contract: [[block:secrets]], [[flag:tone]], or
                              [[redact:word]] (each text with `word` replaced by `[redacted]`)
  In any of them: [[guard-latency:500]] answers after 500 ms, [[guard-status:503]] with that
  status, [[guard-garbage]] with text outside the protocol.

Streams honour `stream_options.include_usage` as OpenAI does: the usage chunk is sent only when
asked for. Any other method and path is recorded and answered 200 with an empty list, as a
provider's files or batches API would: a request that should never have left the gateway shows.
`GET /mock/requests` returns the recent requests (method, path, headers, body) for assertions;
Envoy's active health checks (user agent `Envoy/HC`) are answered but not recorded; `POST
/mock/health-checks {"host": ..., "status": 503}` makes the ones with that Host header fail.

Run: python -m harness.mock_provider --port 18080
"""

import asyncio
import contextvars
import gzip
import hashlib
import json
import struct
import time
import urllib.parse
import zlib
from collections import deque
from pathlib import Path

from aiohttp import web

from .procs import serve_main

DEFAULT_TEXT = "The capital of France is Paris."
RECENT = deque(maxlen=1000)
# Scripted answers to Envoy's active health checks, by Host (`POST /mock/health-checks`).
HEALTH_CHECKS = {}


def header_int(request, name, default):
    try:
        return int(request.headers.get(name, default))
    except ValueError:
        return default


def for_model(request, header, req):
    """The number a `model=number[,model=number...]` header gives the request's model, else None."""
    for entry in request.headers.get(header, "").split(","):
        model, _, number = entry.strip().partition("=")
        if model and req.get("model") == model and number.isdigit():
            return int(number)
    return None


def usage_numbers(request):
    return {
        "prompt": header_int(request, "x-mock-prompt-tokens", 21),
        "completion": header_int(request, "x-mock-completion-tokens", 7),
        "cached": header_int(request, "x-mock-cached-tokens", 0),
        "reasoning": header_int(request, "x-mock-reasoning-tokens", 0),
    }


# Characters per stream piece, when a request asks for fixed-size pieces (per request: a
# context variable is local to the handler's task).
PIECE_CHARS = contextvars.ContextVar("piece_chars", default=0)
# The tool calls a request scripted (`x-mock-tool-calls`).
TOOL_CALLS = contextvars.ContextVar("tool_calls", default=())


def argument_pieces(arguments):
    """A tool call's arguments as JSON text, in stream pieces."""
    text = json.dumps(arguments, separators=(",", ":"))
    size = PIECE_CHARS.get() or 8
    return [text[i:i + size] for i in range(0, len(text), size)]


def words(text):
    """Splits text into stream pieces that keep every character (spaces included): words, or
    fixed-size pieces with `x-mock-piece-chars`."""
    size = PIECE_CHARS.get()
    if size > 0:
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]
    pieces, current = [], ""
    for ch in text:
        current += ch
        if ch == " ":
            pieces.append(current)
            current = ""
    if current:
        pieces.append(current)
    return pieces or [""]


def sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {payload}\n\n"


def openai_usage(u):
    return {
        "prompt_tokens": u["prompt"],
        "completion_tokens": u["completion"],
        "total_tokens": u["prompt"] + u["completion"],
        "prompt_tokens_details": {"cached_tokens": u["cached"]},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning"]},
    }


def chat_answer(model, text, usage):
    message = {"role": "assistant", "content": text or None}
    calls = TOOL_CALLS.get()
    if calls:
        message["tool_calls"] = [{"id": f"call_mock_{i}", "type": "function", "function": {
            "name": c["name"], "arguments": json.dumps(c["arguments"], separators=(",", ":"))}}
            for i, c in enumerate(calls)]
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
    }
    if usage:
        body["usage"] = openai_usage(usage)
    return body


def chat_stream(model, text, usage):
    created = int(time.time())
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model}
    out = [sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    for piece in words(text) if text else []:
        out.append(sse({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}))
    calls = TOOL_CALLS.get()
    for i, call in enumerate(calls):
        start = {"index": i, "id": f"call_mock_{i}", "type": "function",
                 "function": {"name": call["name"], "arguments": ""}}
        out.append(sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [start]}, "finish_reason": None}]}))
        for piece in argument_pieces(call["arguments"]):
            delta = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
            out.append(sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    finish = "tool_calls" if calls else "stop"
    out.append(sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}))
    if usage:
        out.append(sse({**base, "choices": [], "usage": openai_usage(usage)}))
    out.append(sse("[DONE]"))
    return "".join(out)


def completion_answer(model, text, usage):
    body = {"id": "cmpl-mock", "object": "text_completion", "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
    if usage:
        body["usage"] = openai_usage(usage)
    return body


def completion_stream(model, text, usage):
    out = [sse({"id": "cmpl-mock", "object": "text_completion", "model": model,
                "choices": [{"index": 0, "text": piece, "finish_reason": None}]}) for piece in words(text)]
    if usage:
        out.append(sse({"id": "cmpl-mock", "object": "text_completion", "model": model, "choices": [],
                        "usage": openai_usage(usage)}))
    out.append(sse("[DONE]"))
    return "".join(out)


def responses_usage(u):
    return {"input_tokens": u["prompt"], "output_tokens": u["completion"],
            "input_tokens_details": {"cached_tokens": u["cached"]},
            "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
            "total_tokens": u["prompt"] + u["completion"]}


def responses_answer(model, text, usage):
    body = {"id": "resp-mock", "object": "response", "model": model, "status": "completed",
            "output": [{"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": text}]}]}
    if usage:
        body["usage"] = responses_usage(usage)
    return body


def responses_stream(model, text, usage):
    out = [sse({"type": "response.created", "response": {"id": "resp-mock", "model": model, "status": "in_progress"}},
               "response.created")]
    for piece in words(text):
        out.append(sse({"type": "response.output_text.delta", "delta": piece}, "response.output_text.delta"))
    done = {"id": "resp-mock", "model": model, "status": "completed"}
    if usage:
        done["usage"] = responses_usage(usage)
    out.append(sse({"type": "response.completed", "response": done}, "response.completed"))
    return "".join(out)


def anthropic_usage(u, output=True):
    body = {"input_tokens": u["prompt"], "cache_read_input_tokens": u["cached"], "cache_creation_input_tokens": 0}
    body["output_tokens"] = u["completion"] if output else 1
    return body


def messages_answer(model, text, usage):
    calls = TOOL_CALLS.get()
    content = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_mock_{i}", "name": c["name"], "input": c["arguments"]}
                for i, c in enumerate(calls)]
    body = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": "tool_use" if calls else "end_turn"}
    if usage:
        body["usage"] = anthropic_usage(usage)
    return body


def messages_stream(model, text, usage):
    start = {"id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": []}
    if usage:
        start["usage"] = anthropic_usage(usage, output=False)
    out = [sse({"type": "message_start", "message": start}, "message_start"),
           sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
               "content_block_start"),
           sse({"type": "ping"}, "ping")]
    for piece in words(text):
        out.append(sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                       "content_block_delta"))
    out.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    calls = TOOL_CALLS.get()
    for i, call in enumerate(calls, start=1):
        block = {"type": "tool_use", "id": f"toolu_mock_{i - 1}", "name": call["name"], "input": {}}
        out.append(sse({"type": "content_block_start", "index": i, "content_block": block}, "content_block_start"))
        for piece in argument_pieces(call["arguments"]):
            delta = {"type": "input_json_delta", "partial_json": piece}
            out.append(sse({"type": "content_block_delta", "index": i, "delta": delta}, "content_block_delta"))
        out.append(sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    delta = {"type": "message_delta", "delta": {"stop_reason": "tool_use" if calls else "end_turn"}}
    if usage:
        delta["usage"] = {"output_tokens": usage["completion"]}
    out.append(sse(delta, "message_delta"))
    out.append(sse({"type": "message_stop"}, "message_stop"))
    return "".join(out)


# Gemini 3 signs each turn's first function call; the signature must come back with it.
GEMINI_SIGNATURE = "c2lnbmVkIGJ5IHRoZSBtb2Nr"


def gemini_usage(u):
    body = {"promptTokenCount": u["prompt"], "candidatesTokenCount": u["completion"] - u["reasoning"],
            "totalTokenCount": u["prompt"] + u["completion"]}
    if u["cached"]:
        body["cachedContentTokenCount"] = u["cached"]
    if u["reasoning"]:
        body["thoughtsTokenCount"] = u["reasoning"]
    return body


def gemini_calls():
    parts = [{"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in TOOL_CALLS.get()]
    if parts:
        parts[0]["thoughtSignature"] = GEMINI_SIGNATURE
    return parts


def gemini_chunk(model, parts, finish=None, usage=None):
    candidate = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    body = {"candidates": [candidate], "modelVersion": model, "responseId": "gemini-mock"}
    if usage:
        body["usageMetadata"] = gemini_usage(usage)
    return body


def gemini_answer(model, text, usage):
    return gemini_chunk(model, ([{"text": text}] if text else []) + gemini_calls(), "STOP", usage)


def gemini_stream(model, text, usage):
    """`alt=sse`: whole answers as chunks, lines ending in CRLF as Google's do, no end marker."""
    chunks = [gemini_chunk(model, [{"text": piece}]) for piece in (words(text) if text else [])]
    chunks += [gemini_chunk(model, [part]) for part in gemini_calls()]
    chunks.append(gemini_chunk(model, [{"text": ""}], "STOP", usage))
    return "".join(f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in chunks)


GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def bedrock_usage(u):
    body = {"inputTokens": u["prompt"] - u["cached"], "outputTokens": u["completion"],
            "totalTokens": u["prompt"] + u["completion"]}
    if u["cached"]:
        body["cacheReadInputTokens"] = u["cached"]
    return body


def bedrock_answer(model, text, usage):
    calls = TOOL_CALLS.get()
    content = [{"text": text}] if text else []
    content += [{"toolUse": {"toolUseId": f"tooluse_mock_{i}", "name": c["name"], "input": c["arguments"]}}
                for i, c in enumerate(calls)]
    body = {"output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if calls else "end_turn", "metrics": {"latencyMs": 1}}
    if usage:
        body["usage"] = bedrock_usage(usage)
    return body


def event_stream_message(event_type, payload, message_type="event"):
    """One AWS event-stream message: prelude, string headers, JSON payload, two CRC-32s."""
    kind = ":exception-type" if message_type == "exception" else ":event-type"
    headers = b""
    for name, value in ((kind, event_type), (":content-type", "application/json"), (":message-type", message_type)):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_stream(model, text, usage):
    """ConverseStream: text deltas in block 0, each tool call its own block, then the stop
    reason and, last, the usage."""
    out = [event_stream_message("messageStart", {"role": "assistant"})]
    block = 0
    if text:
        for piece in words(text):
            out.append(event_stream_message("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}}))
        out.append(event_stream_message("contentBlockStop", {"contentBlockIndex": 0}))
        block = 1
    calls = TOOL_CALLS.get()
    for i, call in enumerate(calls):
        index = block + i
        start = {"toolUse": {"toolUseId": f"tooluse_mock_{i}", "name": call["name"]}}
        out.append(event_stream_message("contentBlockStart", {"contentBlockIndex": index, "start": start}))
        for piece in argument_pieces(call["arguments"]):
            delta = {"toolUse": {"input": piece}}
            out.append(event_stream_message("contentBlockDelta", {"contentBlockIndex": index, "delta": delta}))
        out.append(event_stream_message("contentBlockStop", {"contentBlockIndex": index}))
    out.append(event_stream_message("messageStop", {"stopReason": "tool_use" if calls else "end_turn"}))
    metadata = {"metrics": {"latencyMs": 1}}
    if usage:
        metadata["usage"] = bedrock_usage(usage)
    out.append(event_stream_message("metadata", metadata))
    return b"".join(out)


# The AWS credentials the Bedrock mock knows (AWS's documentation example pair).
AWS_KEYS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"}


def sigv4_problem(request, raw: bytes):
    """Why a SigV4-signed request's signature is wrong (None when it holds), checked with
    botocore's signer over exactly the headers the request says it signed."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    authorization = request.headers.get("authorization", "")
    fields = dict(part.strip().split("=", 1) for part in authorization[len("AWS4-HMAC-SHA256 "):].split(","))
    access_key, date, region, service, _ = fields["Credential"].split("/")
    if access_key not in AWS_KEYS:
        return f"unknown access key {access_key}"
    signed = fields["SignedHeaders"].split(";")
    headers = {name: request.headers.get(name, "") for name in signed}
    url = f"https://{request.headers.get('host')}{request.raw_path}"
    aws = AWSRequest(method=request.method, url=url, data=raw, headers=headers)
    aws.context["timestamp"] = request.headers.get("x-amz-date", "")
    class Exactly(SigV4Auth):
        # botocore leaves some headers (user-agent) out of what it signs; a signer may sign them.
        def headers_to_sign(self, aws_request):
            signed_headers = super().headers_to_sign(aws_request)
            for name in signed:
                if name not in signed_headers:
                    signed_headers[name] = aws_request.headers[name]
            return signed_headers

    auth = Exactly(Credentials(access_key, AWS_KEYS[access_key], request.headers.get("x-amz-security-token")),
                   service, region)
    claimed = request.headers.get("x-amz-content-sha256")
    if claimed is not None and claimed != hashlib.sha256(raw).hexdigest():
        return "x-amz-content-sha256 is not the body's hash"
    canonical = auth.canonical_request(aws)
    expected = auth.signature(auth.string_to_sign(aws, canonical), aws)
    return None if expected == fields["Signature"] else f"signature mismatch; canonical request was:\n{canonical}"


BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                  429: "ThrottlingException", 503: "ServiceUnavailableException"}


def embeddings_answer(model, usage, count):
    body = {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)]}
    if usage:
        body["usage"] = {"prompt_tokens": usage["prompt"], "total_tokens": usage["prompt"]}
    return body


# api -> (JSON answer, SSE stream, stream usage only when asked for)
ANSWERS = {
    "chat": (chat_answer, chat_stream, True),
    "completions": (completion_answer, completion_stream, True),
    "responses": (responses_answer, responses_stream, False),
    "messages": (messages_answer, messages_stream, False),
    "gemini": (gemini_answer, gemini_stream, False),
    "bedrock": (bedrock_answer, bedrock_stream, False),
}


def error_body(api, status):
    if api == "bedrock":
        return {"message": f"mock error {status}"}
    if api == "gemini":
        return {"error": {"code": status, "message": f"mock error {status}", "status": GEMINI_STATUS.get(status, "INTERNAL")}}
    if api == "messages":
        return {"type": "error", "error": {"type": "api_error", "message": f"mock error {status}"}}
    return {"error": {"message": f"mock error {status}", "type": "server_error", "param": None, "code": None}}


async def write_body(request, response, data: bytes):
    chunk = header_int(request, "x-mock-chunk-bytes", 0) or len(data) or 1
    delay = header_int(request, "x-mock-chunk-delay-ms", 0) / 1000
    reset_after = header_int(request, "x-mock-reset-after", -1)
    sent = 0
    for start in range(0, len(data), chunk):
        piece = data[start:start + chunk]
        if 0 <= reset_after < sent + len(piece):
            await response.write(piece[: max(0, reset_after - sent)])
            await asyncio.sleep(0.05)
            request.transport.abort()
            return
        await response.write(piece)
        sent += len(piece)
        if delay:
            await asyncio.sleep(delay)
    await response.write_eof()


async def record(request: web.Request) -> bytes:
    raw = await request.read()
    if request.headers.get("user-agent", "").startswith("Envoy/HC"):
        # Envoy's active health checks (GET of a model list every 30 s) are not traffic.
        return raw
    RECENT.append({"method": request.method, "path": request.path, "raw_path": request.raw_path,
                   "query": request.query_string, "headers": dict(request.headers),
                   "body": raw.decode("utf-8", "replace"), "time": time.time()})
    return raw


async def count_tokens(request: web.Request):
    """Anthropic's `/v1/messages/count_tokens`: the prompt tokens (`x-mock-prompt-tokens`)."""
    await record(request)
    status = header_int(request, "x-mock-status", 200)
    if status != 200:
        return web.json_response(error_body("messages", status), status=status)
    return web.json_response({"input_tokens": header_int(request, "x-mock-prompt-tokens", 21)})


def pair_groups():
    """Labelled questions and paraphrases by group (tests/data/semantic_pairs.json); every near miss alone."""
    groups = {}
    pairs = json.loads((Path(__file__).resolve().parents[1] / "data" / "semantic_pairs.json").read_text())
    for i, group in enumerate(pairs):
        for text in [group["question"], *group["paraphrases"]]:
            groups[text] = i
    return groups


PAIR_GROUPS = {}


async def rerank(request: web.Request):
    """A scripted ideal verifier in the rerank API shape: a document scores 0.99 when it asks what
    the query asks (the same labelled group), else 0.01. A query containing `verifier-fails` is
    answered 500, `verifier-slow` after 2 s, `verifier-garbage` with text that is no verdict."""
    body = json.loads(await record(request) or b"{}")
    query = body.get("query", "")
    if "verifier-fails" in query:
        return web.json_response({"error": "down"}, status=500)
    if "verifier-slow" in query:
        await asyncio.sleep(2)
    if "verifier-garbage" in query:
        return web.Response(text="I think so", content_type="text/plain")
    if not PAIR_GROUPS:
        PAIR_GROUPS.update(pair_groups())
    group = PAIR_GROUPS.get(query, -1)
    scores = [0.99 if group >= 0 and PAIR_GROUPS.get(doc, -2) == group else 0.01 for doc in body.get("documents", [])]
    return web.json_response({"results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]})


async def chat_verifier(request: web.Request):
    """The same ideal verifier as a chat model asked yes or no (the cache's `verify.kind: chat`):
    the user message is `Question A: …\nQuestion B: …`; `verifier-rambles` in it gets an answer
    that is no verdict."""
    body = json.loads(await record(request) or b"{}")
    asked = body["messages"][-1]["content"]
    first, _, second = asked.partition("\nQuestion B: ")
    first = first.removeprefix("Question A: ")
    if not PAIR_GROUPS:
        PAIR_GROUPS.update(pair_groups())
    group = PAIR_GROUPS.get(first, -1)
    word = "yes" if group >= 0 and PAIR_GROUPS.get(second, -2) == group else "no"
    if "verifier-rambles" in asked:
        word = "Well, it depends."
    return web.json_response({"id": "v", "object": "chat.completion", "model": body.get("model"),
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": word},
                                           "finish_reason": "stop"}]})


async def other(request: web.Request):
    await record(request)
    if request.headers.get("user-agent", "").startswith("Envoy/HC"):
        status = HEALTH_CHECKS.get(request.host, 200)
        return web.json_response({"object": "list", "data": []}, status=status)
    return web.json_response({"object": "list", "data": []})


async def script_health_checks(request: web.Request):
    """`POST /mock/health-checks {"host": "api.openai.com", "status": 503}`: Envoy's active
    health checks sent with that Host header are answered with that status from now on."""
    body = await request.json()
    HEALTH_CHECKS[body["host"]] = int(body["status"])
    return web.json_response(HEALTH_CHECKS)


async def handle(request: web.Request, api: str):
    raw = await record(request)
    try:
        req = json.loads(raw or b"{}")
        if not isinstance(req, dict):
            req = {}
    except ValueError:
        req = {}
    if api == "gemini":
        # The model and the answer's shape are in the path: `<model>:generateContent`.
        model, _, method = request.match_info["call"].partition(":")
        req = {**req, "model": model, "stream": method == "streamGenerateContent"}
    if api == "bedrock" and request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):
        problem = sigv4_problem(request, raw)
        if problem:
            RECENT[-1]["sigv4"] = problem
            headers = {"x-amzn-errortype": "InvalidSignatureException"}
            return web.json_response({"message": "The request signature we calculated does not match the signature you "
                                                 "provided."}, status=403, headers=headers)
        RECENT[-1]["sigv4"] = "valid"
    if api == "vertex-anthropic":
        # Vertex takes the model in the path and the version in the body, never a `model` member.
        if "model" in req or req.get("anthropic_version") != "vertex-2023-10-16":
            return web.json_response({"error": {"code": 400, "message": "vertex: bad body", "status": "INVALID_ARGUMENT"}},
                                     status=400)
        model, _, method = request.match_info["call"].partition(":")
        req = {**req, "model": model, "stream": method == "streamRawPredict"}
        api = "messages"
    if api == "bedrock":
        # `/model/<model id, percent-encoded>/converse` or `/converse-stream`.
        req = {**req, "model": request.match_info["model"], "stream": request.match_info["method"] == "converse-stream"}
    PIECE_CHARS.set(header_int(request, "x-mock-piece-chars", 0))
    try:
        TOOL_CALLS.set(tuple(json.loads(urllib.parse.unquote(request.headers.get("x-mock-tool-calls", "[]")))))
    except ValueError:
        TOOL_CALLS.set(())
    latency = header_int(request, "x-mock-latency-ms", 0)
    latency += for_model(request, "x-mock-slow-model", req) or 0
    if latency:
        await asyncio.sleep(latency / 1000)
    status = header_int(request, "x-mock-status", 200)
    status = for_model(request, "x-mock-fail-model", req) or status
    model = req.get("model") or "mock-model"
    text = urllib.parse.unquote(request.headers.get("x-mock-text", DEFAULT_TEXT))
    usage = None if request.headers.get("x-mock-usage") == "off" else usage_numbers(request)
    stream = bool(req.get("stream"))
    content_type = "application/json"

    if "x-mock-raw" in request.headers:
        payload = request.headers["x-mock-raw"].encode()
        content_type = "text/event-stream" if stream else "application/json"
    elif status >= 400:
        payload = json.dumps(error_body(api, status)).encode()
    elif api in ANSWERS:
        answer, stream_of, usage_on_request = ANSWERS[api]
        if stream:
            # OpenAI sends a usage chunk only when `stream_options.include_usage` asks for it.
            asked = bool((req.get("stream_options") or {}).get("include_usage"))
            payload = stream_of(model, text, usage if asked or not usage_on_request else None)
            payload = payload if isinstance(payload, bytes) else payload.encode()
            content_type = "application/vnd.amazon.eventstream" if api == "bedrock" else "text/event-stream"
            # A stream damaged in transit: one byte flipped (the gateway must notice).
            corrupt_at = header_int(request, "x-mock-corrupt-at", -1)
            if 0 <= corrupt_at < len(payload):
                payload = payload[:corrupt_at] + bytes([payload[corrupt_at] ^ 0x40]) + payload[corrupt_at + 1:]
        else:
            payload = json.dumps(answer(model, text, usage)).encode()
    else:  # embeddings
        inputs = req.get("input")
        count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
        payload = json.dumps(embeddings_answer(model, usage, count)).encode()

    headers = {"content-type": request.headers.get("x-mock-content-type", content_type)}
    if api == "bedrock" and status >= 400:
        headers["x-amzn-errortype"] = BEDROCK_ERRORS.get(status, "InternalServerException")
    if request.headers.get("x-mock-gzip") == "on":
        payload = gzip.compress(payload)
        headers["content-encoding"] = "gzip"
    response = web.StreamResponse(status=status, headers=headers)
    if content_type not in ("text/event-stream", "application/vnd.amazon.eventstream") \
            and "x-mock-reset-after" not in request.headers:
        response.content_length = len(payload)
    await response.prepare(request)
    await write_body(request, response, payload)
    return response


MODERATION_CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                         "sexual/minors", "violence", "violence/graphic"]


def markers(text: str, kind: str) -> list:
    """The values of every `[[kind:value]]` marker in `text`."""
    out, start = [], 0
    while (at := text.find(f"[[{kind}:", start)) >= 0:
        end = text.find("]]", at)
        if end < 0:
            break
        out.append(text[at + len(kind) + 3:end])
        start = end
    return out


async def guard_trouble(texts: list):
    """A scripted guard's latency, failure or garbage, from the markers of the judged texts."""
    joined = "\n".join(texts)
    for delay in markers(joined, "guard-latency"):
        await asyncio.sleep(int(delay) / 1000)
    for status in markers(joined, "guard-status"):
        return web.json_response({"error": {"message": "guard down"}}, status=int(status))
    if "[[guard-garbage]]" in joined:
        return web.Response(text="I am not sure what you mean.", content_type="text/plain")
    return None


async def moderation(request: web.Request):
    body = json.loads(await record(request) or b"{}")
    inputs = body.get("input")
    texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
    if (trouble := await guard_trouble(texts)) is not None:
        return trouble
    results = []
    for text in texts:
        scores = {c: 0.001 for c in MODERATION_CATEGORIES}
        for marker in markers(text, "score"):
            for pair in marker.split(","):
                name, _, value = pair.partition("=")
                scores[name] = float(value)
        flags = {c: v >= 0.5 for c, v in scores.items()}
        results.append({"flagged": any(flags.values()), "categories": flags, "category_scores": scores})
    return web.json_response({"id": "modr-mock", "model": body.get("model", "omni-moderation-latest"), "results": results})


def judged_message(messages: list) -> str:
    """The message a chat guard judges: the last one, or in Llama Guard's written prompt the last
    turn of its conversation."""
    text = (messages[-1].get("content") if messages else "") or ""
    if "<BEGIN CONVERSATION>" in text:
        conversation = text.split("<BEGIN CONVERSATION>", 1)[1].split("<END CONVERSATION>", 1)[0]
        text = conversation.strip().split("\n\n")[-1]
    return text


async def chat_guard(request: web.Request):
    body = json.loads(await record(request) or b"{}")
    judged = judged_message(body.get("messages") or [])
    if (trouble := await guard_trouble([judged])) is not None:
        return trouble
    unsafe = markers(judged, "unsafe")
    verdict = "unsafe\n" + ",".join(unsafe) if unsafe else "safe"
    return web.json_response({"id": "guard-1", "object": "chat.completion", "model": body.get("model"),
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict},
                                           "finish_reason": "stop"}]})


async def webhook(request: web.Request):
    body = json.loads(await record(request) or b"{}")
    texts = [t.get("text", "") for t in body.get("texts") or []]
    if (trouble := await guard_trouble(texts)) is not None:
        return trouble
    joined = "\n".join(texts)
    if blocked := markers(joined, "block"):
        return web.json_response({"action": "block", "category": blocked[0], "reason": "scripted block"})
    if words := markers(joined, "redact"):
        redacted = []
        for text in texts:
            for word in words:
                text = text.replace(word, "[redacted]")
            redacted.append(text)
        return web.json_response({"action": "redact", "texts": redacted})
    if flagged := markers(joined, "flag"):
        return web.json_response({"action": "flag", "categories": flagged})
    return web.json_response({"action": "allow"})


async def recent(_request):
    return web.json_response(list(RECENT))


async def clear(_request):
    RECENT.clear()
    return web.json_response({"cleared": True})


async def health(_request):
    return web.json_response({"status": "ok"})


def app():
    application = web.Application(client_max_size=64 * 1024 * 1024)
    routes = [("chat", "/chat/completions"), ("completions", "/completions"), ("embeddings", "/embeddings"),
              ("responses", "/responses"), ("messages", "/messages")]
    for api, suffix in routes:
        application.router.add_post("/v1" + suffix, lambda request, api=api: handle(request, api))
    application.router.add_post("/v1/messages/count_tokens", count_tokens)
    application.router.add_post("/rerank", rerank)
    application.router.add_post("/verifier/v1/chat/completions", chat_verifier)
    application.router.add_post("/v1/moderations", moderation)
    application.router.add_post("/guard/v1/chat/completions", chat_guard)
    application.router.add_post("/guard", webhook)
    # Claude on Vertex AI: `.../publishers/anthropic/models/<model>:rawPredict` (`:streamRawPredict`).
    application.router.add_post("/v1/projects/{project}/locations/{region}/publishers/anthropic/models/{call}",
                                lambda request: handle(request, "vertex-anthropic"))
    # Azure OpenAI: the deployment in the path, `api-version` in the query.
    application.router.add_post("/openai/deployments/{deployment}/chat/completions",
                                lambda request: handle(request, "chat"))
    # Gemini (AI Studio and Vertex AI's paths): `.../models/<model>:generateContent`.
    application.router.add_post("/v1beta/models/{call}", lambda request: handle(request, "gemini"))
    application.router.add_post("/v1/projects/{project}/locations/{region}/publishers/google/models/{call}",
                                lambda request: handle(request, "gemini"))
    # Bedrock runtime: `/model/<model id>/converse` and `/converse-stream`.
    application.router.add_post("/model/{model}/{method:converse|converse-stream}",
                                lambda request: handle(request, "bedrock"))
    application.router.add_get("/mock/requests", recent)
    application.router.add_post("/mock/health-checks", script_health_checks)
    application.router.add_delete("/mock/requests", clear)
    application.router.add_get("/health", health)
    application.router.add_route("*", "/{tail:.*}", other)
    return application


def main():
    serve_main(__doc__, app)


if __name__ == "__main__":
    main()
