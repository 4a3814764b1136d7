"""Requests written byte by byte, for what HTTP client libraries will not send: HTTP/1.1 chunked
bodies with trailers, HTTP/2 (h2c, prior knowledge) with trailers, paths sent exactly as given
(`%63`, `//`, `..`), any method."""

import socket
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events


@dataclass
class Answer:
    status: int
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def json(self):
        import json
        return json.loads(self.body)


def h1(port, method, path, headers=None, body=b"", trailers=None, chunked=None, timeout=30.0) -> Answer:
    """One HTTP/1.1 request on a fresh connection. With `trailers` (or `chunked=True`) the body is
    sent chunked, in two chunks, followed by the trailer section."""
    headers = dict(headers or {})
    chunked = bool(trailers) if chunked is None else chunked
    lines = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if chunked:
        lines.append("transfer-encoding: chunked")
        if trailers:
            lines.append("trailer: " + ", ".join(trailers))
        half = len(body) // 2
        payload = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:]) if part)
        payload += b"0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in (trailers or {}).items()) + b"\r\n"
    else:
        lines.append(f"content-length: {len(body)}")
        payload = body
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_h1(received)


def parse_h1(received: bytes) -> Answer:
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
    else:
        body = rest
    return Answer(int(status_line.split()[1]), headers, body)


def h2c(port, method, path, headers=None, body=b"", trailers=None, timeout=30.0) -> Answer:
    """One HTTP/2 request over cleartext with prior knowledge; with `trailers` the stream ends in a
    trailing HEADERS frame."""
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    request = [(":method", method), (":path", path), (":scheme", "http"), (":authority", f"127.0.0.1:{port}")]
    request += [(k.lower(), str(v)) for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(conn.data_to_send())
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, request, end_stream=not body and not trailers)
        if body:
            half = len(body) // 2
            conn.send_data(stream, body[:half])
            conn.send_data(stream, body[half:], end_stream=not trailers)
        if trailers:
            conn.send_headers(stream, list(trailers.items()), end_stream=True)
        sock.sendall(conn.data_to_send())
        answer = Answer(0)
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    answer.headers = {k: v for k, v in event.headers}
                    answer.status = int(answer.headers.get(":status", 0))
                elif isinstance(event, h2.events.DataReceived):
                    answer.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    return answer


def send(protocol, port, method, path, **kwargs) -> Answer:
    return (h1 if protocol == "h1" else h2c)(port, method, path, **kwargs)
