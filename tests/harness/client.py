"""One way for tests to call the gateway: `post(stack, payload, key=..., headers=..., ...)`."""

import requests

from .stack import DEMO_KEY

CHAT = "/v1/chat/completions"


def post(stack, payload=None, *, key=DEMO_KEY, headers=None, path=CHAT, stream=False, data=None, timeout=30,
         **kwargs) -> requests.Response:
    """POSTs to the gateway with a virtual key (`key=None`: none). `payload` is sent as JSON, or as
    it is when it is already text or bytes (malformed bodies); `data` always as it is."""
    if isinstance(payload, (str, bytes)):
        payload, data = None, payload
    auth = {"authorization": f"Bearer {key}"} if key else {}
    if data is not None:
        auth.setdefault("content-type", "application/json")
    return requests.post(stack.url(path), json=payload if data is None else None, data=data, stream=stream,
                         timeout=timeout, headers={**auth, **(headers or {})}, **kwargs)
