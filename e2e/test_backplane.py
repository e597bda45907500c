"""The chat example on two pods sharing one Redis (the backplane,
``WS_BACKPLANE_URL``), on a real cluster in plain Kubernetes mode.

Deployed as a user deploys it: Redis from ``e2e/redis.yaml`` (its password
in a Secret), the Secret ``websocket-server-backplane`` holding the Redis
URL, and the chart with ``backplane.existingSecret`` - so WS_BACKPLANE_URL
reaches the pods through a real secretKeyRef - running the chat image (the
Dockerfile's target ``chat``) with two replicas. Each pod is reached through
its own port-forward, so a client knows which pod it is on.

- A message sent by a client on pod B reaches a client on pod A, and back.
- Rotation: receivers held on pod A, a sender on pod B sending numbered
  messages all along; pod A is deleted under them (its drain closes each
  with 1001); each receiver reconnects to pod B with ``?last_id=`` (the id
  of the last event it got) and must end with every number exactly once,
  in order - what was published while it was away included.

Runs in .ci/run on the local single-node cluster (scripts/local-cluster.sh
builds the Redis image from Debian's redis-server, scripts/local-image.sh
the chat image; scripts/local-e2e.env names both and sets
E2E_REQUIRE_BACKPLANE=1, so missing images fail instead of skipping), and
on kind in GitHub Actions (scripts/kind-load.sh builds both, the Redis one
from e2e/redis.Dockerfile; scripts/kind-e2e.sh names them and sets the
same). The local cluster has no DNS and no kube-proxy: the chat pods get
the Redis pod's address in the URL; on kind (``E2E_CLUSTER_DNS=1``) the
Service's name, ``redis://:PASSWORD@redis:6379/0``, as a user writes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .cluster import Cluster
from .held import DRAIN_TIMEOUT, GOING_AWAY, e2e_timeout, in_thread
from .render import find, helm_template, is_hook

DEPLOYMENT = ("apps/v1", "Deployment")
CHAT_IMAGE = os.environ.get("E2E_CHAT_IMAGE", "")
REDIS_IMAGE = os.environ.get("E2E_REDIS_IMAGE", "")
#: The cluster resolves Service names (kind: CoreDNS and kube-proxy); the
#: local cluster has neither, and the chat pods get Redis's pod address.
CLUSTER_DNS = bool(os.environ.get("E2E_CLUSTER_DNS"))
REDIS_MANIFEST = Path(__file__).with_name("redis.yaml")
SECRET = "websocket-server-backplane"
CHAT_SELECTOR = "app.kubernetes.io/name=websocket-server"
REDIS_SELECTOR = "app.kubernetes.io/name=redis"
#: How long one event may take to arrive (through Redis and a port-forward).
EVENT_TIMEOUT = 30.0
RECEIVERS = 3
#: Seconds between the sender's numbered messages.
SEND_EVERY = 0.05
#: Messages sent after every receiver is back, before the sender stops.
AFTER_RECONNECT = 20


def _images_or_skip() -> None:
    missing = [name for name in ("E2E_CHAT_IMAGE", "E2E_REDIS_IMAGE") if not os.environ.get(name)]
    if not missing:
        return
    reason = (
        f"{' and '.join(missing)} name no image (scripts/local-image.sh and local-cluster.sh;"
        " on kind scripts/kind-load.sh and kind-e2e.sh)"
    )
    if os.environ.get("E2E_REQUIRE_BACKPLANE"):
        pytest.fail(f"E2E_REQUIRE_BACKPLANE is set, but {reason}")
    pytest.skip(reason)


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def redis_docs() -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(REDIS_MANIFEST.read_text()) if d]
    [container] = find(docs, *DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    container["image"] = REDIS_IMAGE
    return docs


def chat_docs(namespace: str, replicas: int) -> list[dict[str, Any]]:
    """The chart in plain mode, the backplane URL from the Secret, running
    the chat image (the test hook left out)."""
    docs = helm_template(
        set_values={
            "mode": "kubernetes",
            "kubernetes.replicas": str(replicas),
            "backplane.existingSecret.name": SECRET,
        },
        namespace=namespace,
    )
    docs = [copy.deepcopy(d) for d in docs if not is_hook(d)]
    [container] = find(docs, *DEPLOYMENT)["spec"]["template"]["spec"]["containers"]
    assert {
        "name": "WS_BACKPLANE_URL",
        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "url"}},
    } in container["env"]
    container["image"] = CHAT_IMAGE
    container["imagePullPolicy"] = "IfNotPresent"
    return docs


@dataclass
class Chat:
    """The deployment: its namespace and its two ready chat pods."""

    cluster: Cluster
    namespace: str
    pods: list[str]


@pytest.fixture(scope="module")
def chat(cluster: Cluster, ready_timeout: float) -> Iterator[Chat]:
    _images_or_skip()
    with (
        cluster.namespace("ws-e2e-backplane") as ns,
        cluster.diagnose_on_failure(
            ns, [(*DEPLOYMENT, "redis"), (*DEPLOYMENT, "websocket-server")]
        ),
    ):
        password = secrets.token_hex(16)
        cluster.apply(_secret("redis", {"password": password}), ns)
        for doc in redis_docs():
            cluster.apply(doc, ns)
        cluster.wait_ready(*DEPLOYMENT, "redis", ns, timeout=ready_timeout)
        if CLUSTER_DNS:  # the Service's name, as users are told to write it
            address = "redis"
        else:
            [redis] = [p for p in cluster.pods(ns, REDIS_SELECTOR) if p["status"].get("podIP")]
            address = redis["status"]["podIP"]
        url = f"redis://:{password}@{address}:6379/0"
        cluster.apply(_secret(SECRET, {"url": url}), ns)
        docs = chat_docs(ns, replicas=2)
        for doc in docs:
            cluster.apply(doc, ns)
        cluster.wait_ready(*DEPLOYMENT, "websocket-server", ns, timeout=ready_timeout)
        deadline = time.monotonic() + ready_timeout
        while len(pods := cluster.ready_pods(ns, CHAT_SELECTOR)) < 2:
            assert time.monotonic() < deadline, f"two ready chat pods: {pods}"
            time.sleep(1)
        # The URL reached the pods from the Secret; its password stays out
        # of their logs.
        for pod in pods:
            log = cluster.core.read_namespaced_pod_log(pod, ns)
            assert password not in log, f"{pod} logged the Redis password"
        yield Chat(cluster, ns, sorted(pods)[:2])


def room_url(port: int, room: str, name: str, last_id: str = "") -> str:
    url = f"ws://127.0.0.1:{port}/ws/rooms/{room}?name={name}"
    return url + (f"&last_id={quote(last_id)}" if last_id else "")


def stream_id(text: str) -> tuple[int, int]:
    """An event id, ``"<ms>-<seq>"``, as numbers that compare in order."""
    ms, seq = text.split("-")
    return int(ms), int(seq)


async def next_event(ws: ClientConnection, want: dict[str, Any]) -> dict[str, Any]:
    """The next event whose fields include ``want`` (others are skipped)."""
    while True:
        event = json.loads(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
        assert event["type"] != "gap", f"unexpected gap: {event}"
        if want.items() <= event.items():
            return dict(event)


@pytest.mark.timeout(e2e_timeout(4 * EVENT_TIMEOUT))
def test_a_message_sent_on_one_pod_reaches_a_member_on_the_other(chat: Chat) -> None:
    pod_a, pod_b = chat.pods

    async def scenario(port_a: int, port_b: int) -> None:
        async with connect(room_url(port_a, "across", "ann")) as ann:
            await next_event(ann, {"type": "join", "name": "ann"})
            async with connect(room_url(port_b, "across", "bob")) as bob:
                # Bob's join, published on pod B, reaches Ann on pod A.
                joined = await next_event(ann, {"type": "join", "name": "bob"})
                assert joined["members"] == 2, joined
                await bob.send("hello from pod B")
                got = await next_event(ann, {"type": "message", "name": "bob"})
                assert got["text"] == "hello from pod B"
                # The sender gets its own message too: the same event, id included.
                own = await next_event(bob, {"type": "message", "name": "bob"})
                assert own == got
                await ann.send("hello from pod A")
                got = await next_event(bob, {"type": "message", "name": "ann"})
                assert got["text"] == "hello from pod A"
                assert stream_id(got["id"]) > stream_id(own["id"])

    with (
        chat.cluster.port_forward(chat.namespace, pod_a, 8080) as port_a,
        chat.cluster.port_forward(chat.namespace, pod_b, 8080) as port_b,
    ):
        asyncio.run(scenario(port_a, port_b))


@dataclass
class Goal:
    """The number the sender ends with, once it is known."""

    last: int | None = None

    def reached(self, numbers: list[int]) -> bool:
        return self.last is not None and bool(numbers) and numbers[-1] >= self.last


@dataclass
class Receiver:
    """A member that reconnects once, with the last id it saw."""

    name: str
    numbers: list[int] = field(default_factory=list)
    last_id: str = ""
    first_close: int | None = None
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)
    joined: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, raw: str | bytes, sender: str) -> None:
        event = json.loads(raw)
        assert event["type"] != "gap", f"{self.name}: {event}"
        self.last_id = event["id"]
        if event["type"] == "join" and event["name"] == self.name:
            self.joined.set()
        if event["type"] == "message" and event["name"] == sender:
            self.numbers.append(int(event["text"]))

    async def run(self, room: str, port_a: int, port_b: int, sender: str, goal: Goal) -> None:
        """On pod A until it goes away, then on pod B from ``last_id``,
        until the sender's last number arrived."""
        async with connect(room_url(port_a, room, self.name)) as ws:
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    self.take(raw, sender)
        self.first_close = ws.close_code
        async with connect(room_url(port_b, room, self.name, self.last_id)) as ws:
            self.reconnected.set()
            while not goal.reached(self.numbers):
                self.take(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT), sender)


#: Numbered messages sent before pod A is deleted.
BEFORE = 20


@pytest.mark.timeout(e2e_timeout(2 * DRAIN_TIMEOUT, 4 * EVENT_TIMEOUT))
def test_members_of_a_deleted_pod_resume_on_the_other_without_a_loss(chat: Chat) -> None:
    pod_a, pod_b = chat.pods
    room, sender_name = "rotation", "sender"
    goal = Goal()

    async def scenario(port_a: int, port_b: int) -> tuple[list[Receiver], list[int], int]:
        receivers = [Receiver(f"r{i}") for i in range(RECEIVERS)]
        own: list[int] = []
        async with connect(room_url(port_b, room, sender_name)) as sender:
            await next_event(sender, {"type": "join", "name": sender_name})
            tasks = [
                asyncio.ensure_future(r.run(room, port_a, port_b, sender_name, goal))
                for r in receivers
            ]
            for r in receivers:
                await asyncio.wait_for(r.joined.wait(), EVENT_TIMEOUT)

            async def read_own() -> None:
                # The sender reads as a client does (and so answers pings).
                async for raw in sender:
                    event = json.loads(raw)
                    if event["type"] == "message" and event["name"] == sender_name:
                        own.append(int(event["text"]))
                    if goal.reached(own):
                        return

            reading = asyncio.ensure_future(read_own())
            n = 0

            async def send_until(done: Any) -> None:
                nonlocal n
                while not done():
                    await sender.send(str(n))
                    n += 1
                    await asyncio.sleep(SEND_EVERY)

            # Numbers before the rotation; then pod A is deleted under the
            # receivers while the sender goes on, until all are back on B.
            await send_until(lambda: n >= BEFORE)
            sending = asyncio.ensure_future(
                send_until(lambda: all(r.reconnected.is_set() for r in receivers))
            )
            await in_thread(chat.cluster.core.delete_namespaced_pod, pod_a, chat.namespace)
            await asyncio.wait_for(sending, 2 * DRAIN_TIMEOUT)
            during = n - BEFORE
            goal.last = n + AFTER_RECONNECT - 1
            await send_until(lambda: n > (goal.last or 0))
            await asyncio.wait_for(asyncio.gather(*tasks, reading), 4 * EVENT_TIMEOUT)
        return receivers, own, during

    with (
        chat.cluster.port_forward(chat.namespace, pod_a, 8080) as port_a,
        chat.cluster.port_forward(chat.namespace, pod_b, 8080) as port_b,
    ):
        receivers, own, during = asyncio.run(scenario(port_a, port_b))
    assert goal.last is not None
    sent = list(range(goal.last + 1))
    print(
        f"sent {len(sent)} numbered messages from pod {pod_b}: {BEFORE} before pod {pod_a} "
        f"was deleted, {during} until its {RECEIVERS} members were back on {pod_b}"
    )
    assert own == sent, "the sender's own messages"
    for r in receivers:
        assert r.first_close == GOING_AWAY, f"{r.name}: the drain's close was {r.first_close}"
        missing = sorted(set(sent) - set(r.numbers))
        twice = sorted({x for x in r.numbers if r.numbers.count(x) > 1})
        assert r.numbers == sent, f"{r.name}: missing {missing}, twice {twice}"
