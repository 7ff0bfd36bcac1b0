"""Load test of ``skelgraph serve``: concurrent WebSocket streams of keypoint frames.

Starts the service as a subprocess on a free loopback port, then opens ``--clients`` WebSocket
streams that each send ``--fps`` keypoint frames per second for ``--duration`` seconds (on a fixed
schedule, independent of the replies) and time every reply. Reports the reply latency (send to
reply, p50/p90/p99/max), the server's own time per frame, errors and missing replies, writes
``benchmarks/results/serve_load.json`` and prints a table.

    python benchmarks/serve_load.py                       # 8 clients x 30 fps x 30 s
    python benchmarks/serve_load.py --clients 4 --duration 5 --checkpoint model.pt

Without ``--checkpoint`` the service's default, the packaged ``penn-action-fast`` model, is used
when there is one, else an untrained InfoGCN++ of the ``infogcn2_small`` shape (the cost per frame
does not depend on the weights). Needs ``skelgraph[serve]`` (uvicorn, websockets).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_table, machine, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
#: the requirement the default run checks
TARGET_P99_MS = 50.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent streams (default: 8)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second per stream")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    parser.add_argument("--checkpoint", help="checkpoint file or pretrained name (see above)")
    parser.add_argument(
        "--model-config",
        default="infogcn2_small",
        help="shipped config whose model shape the untrained fallback uses",
    )
    parser.add_argument(
        "--model-args",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="change the untrained model's arguments, e.g. channels=16 depth=1",
    )
    parser.add_argument("--threads", type=int, default=1, help="server torch threads (default: 1)")
    parser.add_argument(
        "--stream-workers", type=int, default=1, help="server stream workers (default: 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON results file")
    return parser.parse_args(argv)


def untrained_checkpoint(
    config_name: str, folder: Path, overrides: list[str] = ()
) -> tuple[Path, str]:
    """An untrained model of a shipped config's shape (penn13, 15 classes), with the model
    arguments in :obj:`overrides` (``key=value``, YAML values) changed, as a checkpoint."""
    import yaml

    from skelgraph.models import create
    from skelgraph.models.checkpoint import make_meta, save_checkpoint
    from skelgraph.preprocess import PreprocessConfig
    from skelgraph.train.config import load_config

    config = load_config(config_name)
    name, classes = config.model.name, [f"class_{i}" for i in range(15)]
    args = dict(config.model.args)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--model-args: expected KEY=VALUE, got {item!r}")
        args[key] = yaml.safe_load(value)
    model = create(name, num_classes=len(classes), layout="penn13", **args)
    meta = make_meta(
        model=name,
        model_args=model.config,
        classes=classes,
        layout="penn13",
        in_channels=3,
        window=int(config.data.window),
        preprocess=PreprocessConfig().to_dict(),
    )
    path = folder / "untrained.pt"
    save_checkpoint(path, model, meta)
    changed = f", {' '.join(overrides)}" if overrides else ""
    params = sum(p.numel() for p in model.parameters())
    return path, (
        f"untrained {name} ({config_name} shape{changed}; {params:,} parameters, penn13, "
        "15 classes)"
    )


def pick_checkpoint(args: argparse.Namespace, folder: Path) -> tuple[str, str]:
    """The checkpoint to serve and its description (see the module description)."""
    if args.checkpoint:
        return args.checkpoint, args.checkpoint
    if not args.model_args:
        from skelgraph.models.pretrained import available_pretrained

        if "penn-action-fast" in available_pretrained():
            return "penn-action-fast", "penn-action-fast (packaged)"
    path, description = untrained_checkpoint(args.model_config, folder, args.model_args)
    return str(path), description


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    checkpoint: str,
    port: int,
    threads: int,
    clients: int,
    stream_workers: int,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """``skelgraph serve`` on ``port``, returned once ``/health`` says the model is ready."""
    command = [
        sys.executable,
        "-m",
        "skelgraph",
        "serve",
        "--checkpoint",
        checkpoint,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--max-sessions",
        str(max(clients, 1)),
        "--stream-workers",
        str(stream_workers),
        "--log-level",
        "warning",
        *extra,
    ]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with code {server.returncode}: {command}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if json.loads(r.read())["status"] == "ok":  # "warming" while the model loads
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise RuntimeError("server was not ready within 600 s")


def motion(num_frames: int, seed: int) -> np.ndarray:
    """A coco17 person (pixels) swinging arms and legs, :obj:`(T, 17, 3)`."""
    rng = np.random.default_rng(seed)
    base = np.array(
        [
            [320, 100], [310, 92], [330, 92], [300, 96], [340, 96],  # head
            [290, 140], [350, 140], [270, 190], [370, 190], [260, 240], [380, 240],  # arms
            [300, 240], [340, 240], [295, 310], [345, 310], [290, 380], [350, 380],  # legs
        ],
        dtype=np.float32,
    )  # fmt: skip
    t = np.arange(num_frames, dtype=np.float32)[:, None] / 30.0
    phase = rng.uniform(0, 2 * math.pi)
    swing = np.zeros((num_frames, 17, 2), dtype=np.float32)
    swing[:, 7:11, 1] = -40 * np.sin(2 * math.pi * t + phase)  # elbows and wrists
    swing[:, 13:17, 0] = 15 * np.sin(2 * math.pi * t + phase)  # knees and ankles
    coords = base + swing + rng.normal(0, 1.5, (num_frames, 17, 2)).astype(np.float32)
    conf = np.full((num_frames, 17, 1), 0.9, dtype=np.float32)
    return np.concatenate([coords, conf], axis=-1)


async def client(url: str, index: int, fps: float, duration: float) -> dict[str, Any]:
    """One stream: sends frames on schedule, times every reply by its frame index."""
    import websockets

    num_frames = round(fps * duration)
    frames = motion(num_frames, seed=index)
    sent: dict[int, float] = {}
    latencies: list[float] = []
    server_ms: list[float] = []
    errors: list[str] = []
    late_sends = 0
    async with websockets.connect(url, max_size=2**22, compression=None) as ws:
        hello = json.loads(await ws.recv())
        if hello.get("type") != "hello":
            return {"client": index, "errors": [f"expected hello, got {hello}"], "latency": []}

        async def receive() -> None:
            while len(latencies) + len(errors) < num_frames:
                reply = json.loads(await ws.recv())
                now = time.perf_counter()
                if reply.get("type") != "prediction":
                    errors.append(str(reply.get("error", reply)))
                    continue
                latencies.append(1e3 * (now - sent[reply["frame"]]))
                server_ms.append(reply["elapsed_ms"])

        receiver = asyncio.create_task(receive())
        start = time.perf_counter() + 0.05 * index / max(fps, 1)  # spread the clients' phases
        for i in range(num_frames):
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0 / fps:
                late_sends += 1
            message = json.dumps({"keypoints": np.round(frames[i], 2).tolist()})
            sent[i] = time.perf_counter()
            await ws.send(message)
        try:
            await asyncio.wait_for(receiver, timeout=10.0)
        except asyncio.TimeoutError:
            receiver.cancel()
    return {
        "client": index,
        "frames": num_frames,
        "replies": len(latencies),
        "missing": num_frames - len(latencies) - len(errors),
        "errors": errors,
        "late_sends": late_sends,
        "latency": latencies,
        "server_ms": server_ms,
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; :obj:`None` elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


async def probe_health(port: int, duration: float, interval: float = 0.1) -> list[float]:
    """``GET /health`` every :obj:`interval` seconds while the streams run: milliseconds per
    answer, which stay small when model work keeps off the event loop."""
    times = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        start = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        await reader.read()
        writer.close()
        if b" 200 " not in status:
            raise RuntimeError(f"/health answered {status!r}")
        times.append(1e3 * (time.perf_counter() - start))
        await asyncio.sleep(interval)
    return times


async def run_clients(
    port: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], list[float]]:
    url = f"ws://127.0.0.1:{port}/v1/stream"
    *results, health = await asyncio.gather(
        *(client(url, i, args.fps, args.duration) for i in range(args.clients)),
        probe_health(port, args.duration),
    )
    return results, health


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        checkpoint, description = pick_checkpoint(args, Path(tmp))
        port = free_port()
        load_before = os.getloadavg()
        server = start_server(checkpoint, port, args.threads, args.clients, args.stream_workers)
        try:
            server_cpu = cpu_seconds(server.pid)
            client_cpu = time.process_time()
            wall = time.perf_counter()
            results, health = asyncio.run(run_clients(port, args))
            wall = time.perf_counter() - wall
            client_cpu = time.process_time() - client_cpu
            if server_cpu is not None:
                server_cpu = cpu_seconds(server.pid) - server_cpu
        finally:
            server.terminate()
            server.wait(timeout=30)
    load_after = os.getloadavg()
    latencies = [x for r in results for x in r["latency"]]
    server_ms = [x for r in results for x in r["server_ms"]]
    errors = [e for r in results for e in r["errors"]]
    missing = sum(r["missing"] for r in results)
    summary = {
        "clients": args.clients,
        "fps": args.fps,
        "duration_s": args.duration,
        "frames_sent": sum(r["frames"] for r in results),
        "replies": len(latencies),
        "errors": len(errors),
        "missing": missing,
        "late_sends": sum(r["late_sends"] for r in results),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=math.nan),
        "mean_ms": statistics.fmean(latencies) if latencies else math.nan,
        "server_p50_ms": percentile(server_ms, 50),
        "server_p99_ms": percentile(server_ms, 99),
        "replies_per_s": len(latencies) / wall,
        "health_p50_ms": percentile(health, 50),
        "health_p99_ms": percentile(health, 99),
        "server_cpu_ms_per_reply": (
            1e3 * server_cpu / len(latencies) if server_cpu is not None and latencies else math.nan
        ),
        "server_cpu_s": server_cpu,
        "client_cpu_s": client_cpu,
        "wall_s": wall,
    }
    passed = not errors and not missing and summary["p99_ms"] <= TARGET_P99_MS
    record = {
        "summary": summary,
        "passed": passed,
        "target": f"no error, no missing reply, p99 <= {TARGET_P99_MS} ms",
        "checkpoint": description,
        "server_torch_threads": args.threads,
        "server_stream_workers": args.stream_workers,
        "load_average_before": list(load_before),
        "load_average_after": list(load_after),
        "machine": machine(),
        "clients": [
            {k: v for k, v in r.items() if k not in ("latency", "server_ms")}
            | {"p50_ms": percentile(r["latency"], 50), "p99_ms": percentile(r["latency"], 99)}
            for r in results
        ],
        "first_errors": errors[:5],
    }
    write_json(args.out, record)
    columns = ["clients", "fps", "duration_s", "replies", "errors", "missing"]
    columns += ["p50_ms", "p99_ms", "max_ms", "server_p50_ms", "server_cpu_ms_per_reply"]
    columns += ["health_p99_ms"]
    print(format_table([summary], columns))
    print(
        f"model: {description}; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} ({machine()['cores']} cores)"
    )
    print(f"{'PASS' if passed else 'FAIL'}: {record['target']}; results in {args.out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
