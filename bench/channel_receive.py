"""CPU a stream process spends receiving one channel message, before and after the lean receive path.

    .venv/bin/python -m bench.channel_receive [--messages 20000] [--rate 1000]  # writes bench/channel_receive.json

Side by side in one run, on the Pub/Sub emulator, two receiver processes take
the same messages, each from its own subscription:

- ``client``: the receive path the stream service had before: google-cloud-pubsub's
  ``SubscriberClient.subscribe`` (its streaming-pull manager, lease management,
  one executor hop per message), the callback acknowledging and decoding each
  message and handing it over alone;
- ``lean``: the stream service's own path now (``PubSubChannel.subscribe``): the
  streaming pull as a task on an event loop (here one on a thread of its own,
  where the service passes its loop), each response decoded and handed over as
  one batch, acknowledged in the next request.

Both hand messages to the same kind of handler (what ``Hub.receive`` does:
append under a lock). Each reports the CPU time (user + system, all threads)
its process spent from the first message to the last, per message.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bench.servers import ROOT, stop_on_sigterm

TOPIC = "user-notifications"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Tally:
    """What the hub does with a delivery: take the lock, append, wake nobody (no loop here)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.lock = threading.Lock()
        self.inbox: list[Any] = []
        self.count = 0
        self.first: tuple[float, float] | None = None  # (wall, cpu)
        self.done = threading.Event()

    def receive(self, messages: Sequence[Any]) -> None:
        with self.lock:
            if self.first is None:
                self.first = (time.monotonic(), _cpu())
            self.inbox.extend(messages)
            del self.inbox[:-1000]
            self.count += len(messages)
            if self.count >= self.expected:
                self.done.set()


def _receive(mode: str, project: str, expected: int, ready_file: str) -> dict[str, Any]:
    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    from shared.backends.pubsub_channel import PubSubChannel
    from shared.channel import ChannelMessage

    tally = _Tally(expected)
    if mode == "lean":
        channel = PubSubChannel(project, TOPIC)
        subscription: Any = channel.subscribe(f"bench-{uuid.uuid4().hex[:8]}", tally.receive)
        while not subscription.healthy():
            time.sleep(0.05)
    else:
        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(project, f"bench-client-{uuid.uuid4().hex[:8]}")
        subscriber.create_subscription(request={"name": path, "topic": f"projects/{project}/topics/{TOPIC}"})

        def callback(message: Any) -> None:
            message.ack()
            tally.receive([ChannelMessage.decode(message.data, message.attributes)])

        future = subscriber.subscribe(path, callback=callback)
    with open(ready_file, "w") as ready:
        ready.write("ready")
    finished = tally.done.wait(600)
    end = (time.monotonic(), _cpu())
    first = tally.first or end
    if mode == "lean":
        subscription.close()
    else:
        future.cancel()
        subscriber.delete_subscription(request={"subscription": path})
    return {
        "mode": mode,
        "received": tally.count,
        "complete": finished,
        "seconds": round(end[0] - first[0], 2),
        "cpu_seconds": round(end[1] - first[1], 3),
        "cpu_us_per_message": round((end[1] - first[1]) * 1e6 / max(1, tally.count), 1),
    }


def _publish(project: str, count: int, rate: float) -> None:
    from shared.backends.pubsub_channel import PubSubChannel
    from shared.channel import ALL_INSTANCES, ChannelMessage

    channel = PubSubChannel(project, TOPIC)
    started = time.monotonic()
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        batch = [
            ChannelMessage(f"user-{n % 997}", "notification", {"id": f"{n:024x}", "title": "bench", "n": n})
            for n in range(sent, due)
        ]
        if batch:
            channel.send(ALL_INSTANCES, batch)
            sent = due
        time.sleep(0.01)
    channel.close()


def main(argv: list[str] | None = None) -> int:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description="CPU per received channel message, client vs lean")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "channel_receive.json"))
    parser.add_argument("--receiver", choices=("client", "lean"), help=argparse.SUPPRESS)
    parser.add_argument("--project", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.receiver:
        result = _receive(args.receiver, args.project, args.messages, args.ready_file)
        sys.stdout.write(json.dumps(result) + "\n")
        return 0

    from devtools import emulators
    from shared.backends.pubsub_channel import ensure_topics

    project = f"bench-receive-{uuid.uuid4().hex[:6]}"
    emulator = emulators.start("pubsub", project)
    try:
        env = {**os.environ, **emulator.env(), "PYTHONPATH": str(ROOT), "GOOGLE_CLOUD_PROJECT": project}
        os.environ.update(emulator.env())
        ensure_topics(project, [TOPIC])
        receivers = []
        for mode in ("client", "lean"):
            ready = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-receive-{uuid.uuid4().hex}")  # noqa: S108
            command = [sys.executable, "-m", "bench.channel_receive", "--receiver", mode, "--project", project]
            command += ["--messages", str(args.messages), "--ready-file", ready]
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            receivers.append((process, ready))
        for process, ready in receivers:
            deadline = time.monotonic() + 60
            while not os.path.exists(ready) and time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError("a receiver exited before it was ready")
                time.sleep(0.05)
            os.unlink(ready)
        _publish(project, args.messages, args.rate)
        results = [json.loads(process.communicate(timeout=600)[0]) for process, _ in receivers]
    finally:
        emulator.stop()
    report = {
        "messages": args.messages,
        "rate": args.rate,
        "receivers": results,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(report, indent=2) + "\n"
    with open(args.out, "w") as out:
        out.write(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
