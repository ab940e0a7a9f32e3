"""Two meshes joined through a real Mosquitto, each mesh in its own network
namespaces: issue 17's "must show" on a real kernel path (app/bridge.py).

The valley::

    mesh A (br0)                 the "internet" (br100)               mesh B (br1)
    a2 ─── a1 ─ m100 ──────────── inet: mosquitto :1883 ──────────── m100 ─ b1 ─── b2

- Every router is a ``python -m app`` in a namespace of its own
  (tests/netns/netlab.py).  a1 and a2 are one radio mesh on br0, b1 and b2
  another on br1, each with its own mesh key: the meshes share no wire and
  no key, only the bridge key.
- a1 and b1 are the bridge routers.  Each has a second veth, its uplink
  (``m100``, 198.18.100.<n>, its own address), to br100, where the "inet"
  namespace runs Mosquitto (tests/bridge_lab.py ``Broker``, a generated
  config, started with ``ip netns exec``).  Their mesh runs on ``m0``/``m1``
  only: the uplink carries MQTT and nothing else.
- Messages are posted on a2 and b2, the routers without a bridge: each one
  crosses radio → bridge → broker → bridge → radio.
- The broker restart is Mosquitto stopped and started again on the same
  address (it keeps nothing: persistence is off).  The uplink cut is a1's
  veth set down at the switch's end: a1's interface stays up (its carrier
  drops), no TCP connection is told, and MQTT keep-alives find out on both
  ends, as on a dead DSL line.

Accounts are written into every data folder before the routers start (the
same records everywhere, as tests/netns/test_catchup_netns.py does):
registering through the page is throttled per phone, and accounts are not
what these tests are about.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bridge_lab import Broker
from tests.helpers import WsClient, wait_for
from tests.netns.netlab import Lab, NetnsRouter, exec_argv
from tests.netns.test_catchup_netns import (
    ROOMS,
    in_parallel,
    logins,
    no_errors_logged,
    post,
    post_many,
    room_entries,
    seed_accounts,
    sockets,
    wait_identical,
)
from tests.netns.test_mesh_netns import key_file, require_netns

pytestmark = pytest.mark.netns

MakeLab = Callable[[], Lab]

MESH_A, MESH_B = 0, 1  # br0 and br1: 198.18.0.0/24 and 198.18.1.0/24
UPLINK = 100  # br100, 198.18.100.0/24: the "internet" between the bridges and the broker
BROKER_PORT = 1883  # MQTT's own port: the broker has its namespace to itself
PREFIX = "valley"
BEACON = "0.3"  # seconds: a record a bridge got from the broker reaches its mesh in a beacon or two
# MQTT keep-alive of the bridges, seconds: a cut uplink is noticed by the
# bridge within about twice this and by the broker (the will) within 1.5 times.
TEST_KEEPALIVE = 2
# Users per mesh: 10 of them post 100 messages within the per-user burst
# (app/chat.py RATE_BURST), so the rate limit never paces a test.
USERS_PER_MESH = 10
MESSAGES_PER_MESH = 100  # the 200 messages: 100 from each mesh
# Bounds for a loaded 2-core CI machine; each settles in seconds here.
CONVERGE_TIMEOUT = 30.0
STATE_TIMEOUT = 20.0
STREAM_INTERVAL = 0.05  # seconds between posts of a stream: 20 messages/s per mesh
GATE_TIMEOUT = 40.0  # a stream waits this long at most for the test to open a gate
JOIN_TIMEOUT = 60.0

A_USERS = [f"ann{i}" for i in range(USERS_PER_MESH)]
B_USERS = [f"bob{i}" for i in range(USERS_PER_MESH)]


# -- the valley -------------------------------------------------------------------------


@dataclass
class Valley:
    lab: Lab
    broker: Broker
    a1: NetnsRouter
    a2: NetnsRouter
    b1: NetnsRouter
    b2: NetnsRouter

    @property
    def routers(self) -> list[NetnsRouter]:
        return [self.a1, self.a2, self.b1, self.b2]


def secret(path: Path) -> Path:
    key_file(path).chmod(0o600)  # as an operator keeps it (a readable key is warned about)
    return path


def build_lab(make_lab: MakeLab) -> Lab:
    lab = make_lab()
    lab.add_host("a1", [MESH_A, UPLINK])
    lab.add_host("a2", [MESH_A])
    lab.add_host("b1", [MESH_B, UPLINK])
    lab.add_host("b2", [MESH_B])
    lab.add_host("inet", [UPLINK])
    return lab


def start_broker(lab: Lab, folder: Path) -> Broker:
    inet = lab.hosts["inet"]
    broker = Broker(
        folder,
        host=inet.address(UPLINK),
        port=BROKER_PORT,
        wrap=exec_argv(inet.ns),
        executor=inet.executor,
    )
    return broker.start()


def start_router(
    lab: Lab, tmp_path: Path, name: str, mesh: int, mesh_key: Path, bridge: list[str]
) -> NetnsRouter:
    data = tmp_path / name / "data"
    seed_accounts(data, A_USERS + B_USERS)
    flags = ["--mesh-key-file", str(mesh_key), "--beacon-interval", BEACON, "--rooms", str(ROOMS)]
    return lab.start_router(name, data, [*flags, *bridge], mesh_bridges=[mesh])


@pytest.fixture
def valley(make_lab: MakeLab, tmp_path: Path) -> Iterator[Valley]:
    require_netns()
    lab = build_lab(make_lab)
    broker = start_broker(lab, tmp_path / "broker")
    try:
        keys = {m: secret(tmp_path / f"mesh-{m}.key") for m in (MESH_A, MESH_B)}
        bridge = [
            "--bridge",
            broker.url(PREFIX),
            "--bridge-key-file",
            str(secret(tmp_path / "bridge.key")),
            "--bridge-keepalive",
            str(TEST_KEEPALIVE),
        ]
        routers = [
            start_router(lab, tmp_path, "a1", MESH_A, keys[MESH_A], bridge),
            start_router(lab, tmp_path, "a2", MESH_A, keys[MESH_A], []),
            start_router(lab, tmp_path, "b1", MESH_B, keys[MESH_B], bridge),
            start_router(lab, tmp_path, "b2", MESH_B, keys[MESH_B], []),
        ]
        yield Valley(lab, broker, *routers)
    finally:
        broker.stop()  # the lab (make_lab) then stops the routers and removes the namespaces


# -- looking at the bridges -------------------------------------------------------------


def bridge_status(r: NetnsRouter) -> dict[str, Any]:
    return r.status()["mesh"]["bridge"]


def state(r: NetnsRouter) -> str:
    return str(bridge_status(r)["state"])


def counter(r: NetnsRouter, name: str) -> int:
    return int(bridge_status(r)["counters"].get(name, 0))


def online_here(r: NetnsRouter, node_id: str) -> bool:
    """Does bridge ``r`` see bridge ``node_id`` online (its retained flag)?"""
    peer = bridge_status(r)["peers"].get(node_id)
    return bool(peer and peer["online"])


def texts(r: NetnsRouter) -> list[str]:
    return sorted(e[3] for e in room_entries(r))


def wait_state(r: NetnsRouter, pred: Callable[[str], bool], what: str) -> None:
    wait_for(lambda: pred(state(r)), STATE_TIMEOUT, f"{r.name}'s bridge {what}")


def socket_sets(v: Valley) -> tuple[list[WsClient], list[WsClient]]:
    """Every user of each mesh logged in on its router without a bridge."""
    a, b = in_parallel(lambda: logins(v.a2, A_USERS), lambda: logins(v.b2, B_USERS))
    return sockets(v.a2, a), sockets(v.b2, b)


def assert_bridges_clean(v: Valley) -> None:
    for r in (v.a1, v.b1):
        st = bridge_status(r)
        assert st["state"] == "connected", (r.name, st)
        assert not st["dropped"], (r.name, st["dropped"])
        # It came in over its own uplink (Mosquitto logs each client's address).
        uplink = v.lab.hosts[r.name].address(UPLINK)
        assert f"New client connected from {uplink}:" in v.broker.log(), v.broker.log()
    no_errors_logged(v.routers)


# -- posting while the test does something else ----------------------------------------------


class Stream(threading.Thread):
    """Posts ``texts`` round robin on ``ws``, one every ``STREAM_INTERVAL``.
    Before text number ``i`` of ``gates`` it waits for that event: the test
    places a broker restart in the stream by count, not by timing."""

    def __init__(
        self,
        ws: Sequence[WsClient],
        texts: Sequence[str],
        tag: str,
        gates: dict[int, threading.Event],
    ) -> None:
        super().__init__(daemon=True)
        self.ws, self.texts, self.tag, self.gates = ws, texts, tag, gates
        self.acked: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i, text in enumerate(self.texts):
                gate = self.gates.get(i)
                if gate is not None and not gate.wait(GATE_TIMEOUT):
                    raise AssertionError(f"stream {self.tag}: gate before {i} never opened")
                self.acked.append(post(self.ws[i % len(self.ws)], text, f"{self.tag}{i}"))
                time.sleep(STREAM_INTERVAL)
        except BaseException as e:  # handed to the test's thread by finish()
            self.error = e

    def finish(self) -> list[str]:
        self.join(JOIN_TIMEOUT)
        assert not self.is_alive(), f"stream {self.tag} still posting after {JOIN_TIMEOUT} s"
        if self.error is not None:
            raise self.error
        return self.acked


def open_all(gates: dict[int, threading.Event]) -> None:
    for g in gates.values():
        g.set()  # a stream that failed early never waits at a closed gate


# -- 1. two meshes, 200 messages ---------------------------------------------------------


def test_two_meshes_in_namespaces_converge_on_200_messages(valley: Valley) -> None:
    v = valley
    ws_a, ws_b = socket_sets(v)
    a_texts = [f"from a2 {n}" for n in range(MESSAGES_PER_MESH)]
    b_texts = [f"from b2 {n}" for n in range(MESSAGES_PER_MESH)]
    in_parallel(lambda: post_many(ws_a, a_texts, "a"), lambda: post_many(ws_b, b_texts, "b"))
    total = 2 * MESSAGES_PER_MESH
    _, took = wait_identical(v.routers, CONVERGE_TIMEOUT, total, "200 messages in both meshes")
    assert texts(v.b2) == sorted(a_texts + b_texts)
    # Every message of the other mesh came in through the bridge, once.
    assert counter(v.a1, "records_received") == MESSAGES_PER_MESH
    assert counter(v.b1, "records_received") == MESSAGES_PER_MESH
    assert counter(v.a1, "records_published") >= MESSAGES_PER_MESH
    assert counter(v.b1, "records_published") >= MESSAGES_PER_MESH
    assert_bridges_clean(v)
    print(f"bridge netns: 200 messages on four routers {took:.1f} s after the last post")


# -- 2. the broker restarted mid-stream --------------------------------------------------

STOP_AFTER = 30  # acked on each side before the broker stops: messages are flowing
DOWN_GATE = 50  # messages 50..74 are posted while the broker is down
UP_GATE = 75  # and 75..99 just after it is back, while the bridges reconnect


def test_broker_restarted_mid_stream(valley: Valley) -> None:
    v = valley
    ws_a, ws_b = socket_sets(v)
    down, up = threading.Event(), threading.Event()
    gates = {DOWN_GATE: down, UP_GATE: up}
    a_texts = [f"stream a {n}" for n in range(MESSAGES_PER_MESH)]
    b_texts = [f"stream b {n}" for n in range(MESSAGES_PER_MESH)]
    streams = [Stream(ws_a, a_texts, "a", gates), Stream(ws_b, b_texts, "b", gates)]
    for s in streams:
        s.start()
    try:
        wait_for(
            lambda: all(len(s.acked) >= STOP_AFTER or s.error for s in streams),
            STATE_TIMEOUT,
            f"{STOP_AFTER} messages posted on each side",
        )
        v.broker.stop()
        for r in (v.a1, v.b1):
            wait_state(r, lambda s: s == "disconnected", "to see the broker gone")
        down.set()
        wait_for(
            lambda: all(len(s.acked) >= UP_GATE or s.error for s in streams),
            STATE_TIMEOUT,
            "the messages posted while the broker is down",
        )
        # The chat went on without the broker: every post was acknowledged.
        v.broker.start()
        up.set()
        acked = [s.finish() for s in streams]
    finally:
        open_all(gates)
    assert [len(a) for a in acked] == [MESSAGES_PER_MESH, MESSAGES_PER_MESH]
    _, took = wait_identical(
        v.routers, CONVERGE_TIMEOUT, 2 * MESSAGES_PER_MESH, "200 messages after the restart"
    )
    assert texts(v.a2) == sorted(a_texts + b_texts)
    for r in (v.a1, v.b1):
        assert "lost the broker" in r.log(), r.log()[-2000:]
    assert_bridges_clean(v)
    print(f"bridge netns: broker restarted; both meshes whole {took:.1f} s after the last post")


# -- 3. the uplink cut for a while and restored ----------------------------------------------

WARM_UP = 10  # messages from each mesh before the cut: both directions work
DURING_CUT = 20  # from each mesh while a1's uplink is down


def test_uplink_cut_for_a_while_and_restored(valley: Valley) -> None:
    v = valley
    ws_a, ws_b = socket_sets(v)
    post_many(ws_a, [f"warm a {n}" for n in range(WARM_UP)], "wa")
    post_many(ws_b, [f"warm b {n}" for n in range(WARM_UP)], "wb")
    wait_identical(v.routers, CONVERGE_TIMEOUT, 2 * WARM_UP, "the warm-up in both meshes")
    a1_id = str(v.a1.status()["node_id"])
    wait_for(lambda: online_here(v.b1, a1_id), STATE_TIMEOUT, "b1 to see a1 online")

    v.lab.set_link("a1", UPLINK, up=False)
    wait_state(v.a1, lambda s: s != "connected", "to notice the cut")
    # The broker noticed too (a1's keep-alives stopped): its will cleared a1's flag.
    wait_for(lambda: not online_here(v.b1, a1_id), STATE_TIMEOUT, "the broker to drop a1")
    a_cut = [f"cut a {n}" for n in range(DURING_CUT)]
    b_cut = [f"cut b {n}" for n in range(DURING_CUT)]
    in_parallel(lambda: post_many(ws_a, a_cut, "ca"), lambda: post_many(ws_b, b_cut, "cb"))
    each = 2 * WARM_UP + DURING_CUT
    wait_identical([v.a1, v.a2], CONVERGE_TIMEOUT, each, "mesh A whole while cut off")
    wait_identical([v.b1, v.b2], CONVERGE_TIMEOUT, each, "mesh B whole while cut off")
    # Nothing crossed the cut uplink, and local chat never waited on it.
    assert not set(b_cut) & set(texts(v.a1)) and not set(a_cut) & set(texts(v.b1))
    assert state(v.a1) != "connected" and state(v.b1) == "connected"

    v.lab.set_link("a1", UPLINK, up=True)
    total = 2 * WARM_UP + 2 * DURING_CUT
    _, took = wait_identical(v.routers, CONVERGE_TIMEOUT, total, "both meshes after the restore")
    assert texts(v.b2) == texts(v.a2)
    wait_for(lambda: online_here(v.b1, a1_id), STATE_TIMEOUT, "b1 to see a1 back")
    assert counter(v.a1, "requests_sent") + counter(v.b1, "requests_sent") >= 1  # by catch-up
    assert_bridges_clean(v)
    print(f"bridge netns: uplink restored; both meshes whole in {took:.1f} s")
