"""Latency at a fixed request rate (open loop): requests are started on schedule, `rate` per second,
over a pool of keep-alive HTTP/1.1 connections, whatever the answers' latency. wrk only measures
closed loops (each connection waits for its answer), so `make bench` uses this for "added latency
at N requests/s"."""

import asyncio
import time


def _request(host, port, path, body: bytes, headers: dict) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_answer(reader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    fields = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            fields[name.strip().lower()] = value.strip()
    if b"content-length" in fields:
        await reader.readexactly(int(fields[b"content-length"]))
    elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _run(host, port, path, body, headers, rate, seconds, connections):
    request = _request(host, port, path, body, headers)
    pool = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    latencies, statuses = [], []

    async def one():
        reader, writer = await pool.get()
        started = time.perf_counter()
        writer.write(request)
        statuses.append(await _read_answer(reader))
        latencies.append(time.perf_counter() - started)
        pool.put_nowait((reader, writer))

    total = int(rate * seconds)
    tasks = []
    began = time.perf_counter()
    for i in range(total):
        wait = began + i / rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    while not pool.empty():
        _, writer = pool.get_nowait()
        writer.close()
    latencies.sort()

    def percentile(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000 if latencies else None

    return {"rps": total / elapsed, "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
            "non_2xx": sum(1 for s in statuses if not 200 <= s < 300)}


def paced(url_host, port, path, body: bytes, headers: dict, rate=1000, seconds=5, connections=32) -> dict:
    """Runs the paced load; returns achieved rps, p50/p99 latency (ms) and the non-2xx count."""
    return asyncio.run(_run(url_host, port, path, body, headers, rate, seconds, connections))
