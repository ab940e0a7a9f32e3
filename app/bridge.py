"""The bridge: this router's mesh joined to other meshes through an MQTT broker.

How this works.  One router per mesh (or several) runs with ``--bridge
mqtt://[user@]host[:port]/prefix``.  The bridge is one more ``Mesh`` beside
the radio link (app/mesh.py ``Meshes``): the broker is to it what the air
is to the radio link.  Under the prefix P, every bridge ``<node>`` (its node
id) uses these topics:

    P/r/<node>   live records it publishes: a BATCH datagram      QoS 1
    P/v/<node>   its version vector: a BEACON datagram, retained  QoS 1
    P/on/<node>  b"1", retained, while it is connected; the broker
                 clears it (the will) when the bridge goes away    QoS 1
    P/q/<node>   requests to it: REQUEST datagrams                  QoS 1
    P/a/<node>   answers to it: BATCH and GONE datagrams            QoS 1

A bridge subscribes to ``P/r/+``, ``P/v/+``, ``P/on/+``, its own ``q`` and
its own ``a``.  Every payload is a node/wire.py datagram signed with the
bridge key (``--bridge-key-file``, by default the mesh key: the meshes
joined are one chat and trust each other as one mesh's routers do), so the
broker's operator can read what crosses but cannot forge or alter it.

Live.  Every record stored here is published once on ``P/r/<us>``: our own
posts at once (``send_record`` wakes the worker), records from the radio
mesh when the worker next looks at the store (every ``TICK``).  A record
that came from the broker is never published back; one that was stored
while the bridge was away is left to catch-up.  Records heard on the broker
are deduplicated by ``(origin, seq)`` against the store and handed to
``Chat.receive_records``, which checks, stores and shows them; the radio
mesh's other routers then get them by the mesh's own catch-up (this
router's beacons now hold them: within a beacon interval or two).  Two
bridges in one mesh may both publish a record of a third router: the copy
is a duplicate everywhere and dropped; a loop of meshes ends the same way,
and a bridge never takes a record of its own origin from the broker.

Private records.  Direct messages and personal settings (DIRECT and
SETTING records, app/direct.py) never go to the broker: whoever runs it
would read them, and they are meant for the radio mesh of the two people.
A catch-up answer names them as gone (so the asker does not ask again), and
such records heard on the broker are dropped (``private``).

Catch-up.  Each bridge keeps its vector (contiguous seqs per origin, as in
a beacon) retained on the broker, republished at most every
``VECTOR_INTERVAL`` while it changes.  Every ``ASK_INTERVAL`` a bridge
compares the vectors of the bridges online with its store and asks one of
them, on its ``q`` topic, for what it lacks (``ASK_RECORDS`` at most per
request, never the same range from two bridges at once); the asked bridge
answers on the asker's ``a`` topic from its store, paced by a token bucket
(``ANSWER_RATE``), with GONE for what is gone for good.  So a bridge that
was offline for a day catches up both ways when it returns: it asks for
what it lacks, and the others ask it for what it has.

QoS 1 everywhere: the broker acknowledges each message, so a record
published just before a broker restart is sent again by paho; duplicates
are what ``(origin, seq)`` drops anyway.  QoS 2 would cost two more round
trips per message for nothing dedup does not give; QoS 0 would lose the
records in flight whenever the broker or the uplink goes, until catch-up.
Sessions are clean: a broker keeps no queue for a bridge that is away (50
meshes' backlog in the broker's memory); catch-up fills the gap instead.

Failure is visible and harmless.  paho's network loop runs in its own
thread (a greenlet under gevent's monkey patching); what it hears goes into
a bounded inbox; everything else (store, chat, publishing) runs in the
bridge's one worker greenlet.  The chat never waits on the bridge:
``send_record`` only wakes the worker.  A broker that refuses us (wrong
password), is down, or an uplink that flaps: paho retries with back-off,
``status()`` shows the state, the last error, the lag and the counters,
and the log says what is wrong in one line each time the state changes.
"""

from __future__ import annotations

import logging
import random
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.queue
import paho.mqtt.client as mqtt

from app.config import BridgeUrl, Config
from app.mesh import Vectors
from node.clock import HybridClock
from node.keys import load_or_make_keys, warn_if_shared
from node.record import MAX_SEQ, ORIGIN_RE, RangeSet, Record, RecordKind, VersionVector
from node.store import Store
from node.sync import TokenBucket
from node.wire import (
    MAX_REQUEST_RANGES,
    U64_MAX,
    BatchDatagram,
    BeaconDatagram,
    GoneDatagram,
    RequestDatagram,
    WireError,
    parse,
    record_body,
)

if TYPE_CHECKING:
    from app.chat import Chat

log = logging.getLogger(__name__)

# The worker looks at the store this often for records from the radio mesh
# to publish (our own posts wake it at once): 50 ms is below what a person
# notices, and a look costs microseconds per origin.
TICK = 0.05
# Our retained vector goes out at most this often while it changes: peers
# see what we hold within it, and a busy mesh costs the broker one small
# message per bridge every 2 s.
VECTOR_INTERVAL = 2.0
# How often a bridge compares the other bridges' vectors with its store.
ASK_INTERVAL = 1.0
# Records asked in one request: about 500 KB of chat, two seconds of answers
# at ANSWER_RATE, so one request keeps an answerer busy without hogging it.
ASK_RECORDS = 2000
# Ranges in one request (a REQUEST datagram holds many more): a mesh of
# tens of routers lacks a few ranges per router.
ASK_RANGES = 64
# A request whose answers stopped for this long is asked again, maybe of
# another bridge (the one asked went away, or dropped our request).
REQUEST_TIMEOUT = 15.0
# Catch-up answers, bytes per second to the broker: 2 Mbit/s, half of a slow
# DSL or LTE uplink's upstream, leaving the rest to live chat; 10,000 records
# of about 250 bytes go in about 10 s.
ANSWER_RATE = 250_000
# One answer message: 16 KiB holds about 60 records, so a catch-up is few
# messages (each costs a topic and an acknowledgement), far under any
# broker's message limit (Mosquitto's default has none).
ANSWER_BATCH_BYTES = 16_384
# Live records in one message: the same bound (a burst from the radio mesh).
LIVE_BATCH_BYTES = ANSWER_BATCH_BYTES
# A burst of more new records than this from the radio mesh (a catch-up of
# the radio mesh, not live chat) is left to the broker's catch-up.
LIVE_SCAN_MAX = 1000
# Broker messages waiting for the worker; past this they are dropped and
# counted, and catch-up repairs what they carried.
INBOX_MAX = 1000
# Bridges whose requests we answer at once: 50 meshes with a bridge or two.
MAX_ASKERS = 128
# Messages paho holds for the broker (in flight or queued): a stalled link
# never fills the router's memory; what is refused, catch-up repairs.
PUBLISH_QUEUE_MAX = 1000
# Seconds between MQTT keep-alive pings: a silent uplink is noticed within
# twice this, and the broker drops our "online" flag within 1.5 times this.
KEEPALIVE = 30
# paho's reconnect back-off, seconds: quick after a blip, at most a minute
# against a broker that is down or refuses us.
RECONNECT_MIN = 1
RECONNECT_MAX = 60
QOS = 1  # see the opening comment


GONE_ENTRY_BYTES = 16  # a GONE range on the wire (origin, first, last): bounds an answer

# Records that never cross the broker (see "Private records" above).
PRIVATE_KINDS = frozenset({RecordKind.DIRECT, RecordKind.SETTING})


def is_private(record: Record) -> bool:
    return record.kind in PRIVATE_KINDS


@dataclass
class _Peer:
    """Another bridge on the broker, as its retained messages say."""

    name: str = ""
    vector: dict[str, int] = field(default_factory=dict)
    online: bool = False


@dataclass
class _Ask:
    """Ranges asked of one bridge; alive while answers keep coming."""

    ranges: list[tuple[str, int, int]]
    deadline: float


@dataclass
class _Queue:
    """What one asker is owed: ``[origin, next seq, last seq]`` ranges."""

    ranges: list[list[Any]]


def topics(prefix: str, node_id: str) -> dict[str, str]:
    """The topics bridge ``node_id`` publishes or listens on."""
    return {
        "records": f"{prefix}/r/{node_id}",
        "vector": f"{prefix}/v/{node_id}",
        "online": f"{prefix}/on/{node_id}",
        "requests": f"{prefix}/q/{node_id}",
        "answers": f"{prefix}/a/{node_id}",
    }


def subscriptions(prefix: str, node_id: str) -> list[str]:
    own = topics(prefix, node_id)
    return [f"{prefix}/r/+", f"{prefix}/v/+", f"{prefix}/on/+", own["requests"], own["answers"]]


def split_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``P/<kind>/<node>`` to ``(kind, node)``; None for anything else."""
    if not topic.startswith(prefix + "/"):
        return None
    kind, _, node = topic[len(prefix) + 1 :].partition("/")
    if kind not in ("r", "v", "on", "q", "a") or not ORIGIN_RE.fullmatch(node):
        return None
    return kind, node


def read_password(path: Path | None) -> str | None:
    """The broker password from its file (first line); None without a file."""
    if path is None:
        return None
    warn_if_shared(path)
    lines = path.read_text().splitlines()
    if not lines or not lines[0]:
        raise ValueError(f"{path}: the first line should hold the broker password")
    return lines[0]


class Bridge:
    """This router's records to and from an MQTT broker (see above)."""

    def __init__(self, config: Config, store: Store, clock: HybridClock) -> None:
        url = config.bridge
        if url is None:
            raise ValueError("no --bridge given")
        self.url, self.store, self.clock = url, store, clock
        self.node_id, self.node_name = store.node_id, config.node_name
        self.keys = load_or_make_keys(config.bridge_key_file or config.key_file)
        self.topics = topics(url.prefix, self.node_id)
        self.keepalive = config.bridge_keepalive
        self.client = self._make_client(url, read_password(config.bridge_password_file), config)
        self._chat: Chat | None = None
        self.inbox: gevent.queue.Queue[tuple[str, bytes] | None] = gevent.queue.Queue(INBOX_MAX)
        self.wake = gevent.event.Event()
        self.worker: gevent.Greenlet | None = None
        self.state, self.since, self.last_error = "stopped", time.monotonic(), ""
        self._generation = 0  # connections so far (paho's thread counts them)
        self._seen_generation = 0  # the connection the worker set up for
        self.marks: dict[str, int] = {}  # per origin: highest seq looked at for live
        self.from_broker = VersionVector()  # records heard on the broker: never sent back
        self.peers: dict[str, _Peer] = {}
        self.asking: dict[str, _Ask] = {}
        self.owed: OrderedDict[str, _Queue] = OrderedDict()
        self.bucket = TokenBucket(ANSWER_RATE, 4 * ANSWER_BATCH_BYTES)
        self.boot_id = random.SystemRandom().randrange(U64_MAX)
        self.beacon_seq = 0
        self._vector_sent: dict[str, int] | None = None
        self._vector_at = self._asked_at = -1e9
        self.counters: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    # -- the paho client, and its callbacks (paho's thread) --------------------------------

    def _make_client(self, url: BridgeUrl, password: str | None, config: Config) -> mqtt.Client:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"community-chat-{self.node_id}",
            clean_session=True,
        )
        if url.user is not None:
            client.username_pw_set(url.user, password)
        if url.tls:
            client.tls_set(
                ca_certs=str(config.bridge_ca_file) if config.bridge_ca_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        client.will_set(self.topics["online"], b"", qos=QOS, retain=True)
        client.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        client.max_queued_messages_set(PUBLISH_QUEUE_MAX)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._set_state("refused", f"the broker refused us: {reason}")
            return
        client.subscribe([(t, QOS) for t in subscriptions(self.url.prefix, self.node_id)])
        client.publish(self.topics["online"], b"1", qos=QOS, retain=True)
        self._generation += 1
        self._set_state("connected", "")
        self.wake.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if self.state == "refused":
            return  # the refusal said it already
        if self.state != "stopped":
            self._set_state("disconnected", f"lost the broker: {reason}")

    def _on_connect_fail(self, _c: Any, _u: Any) -> None:
        self._set_state("disconnected", "cannot reach the broker")

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.inbox.put_nowait((message.topic, bytes(message.payload)))
        except gevent.queue.Full:
            self.dropped["inbox_full"] += 1
        self.wake.set()

    def _set_state(self, state: str, error: str) -> None:
        if state == self.state and error == self.last_error:
            return
        self.state, self.since = state, time.monotonic()
        if error:
            self.last_error = error
            log.warning("bridge %s: %s", self.url.shown, error)
        else:
            log.info("bridge %s: %s", self.url.shown, state)

    # -- starting and stopping ---------------------------------------------------------------

    def start(self, chat: Chat) -> None:
        """Hand what the broker brings to ``chat`` from now on, and start."""
        self._chat = chat
        self._set_state("connecting", "")
        try:
            self.client.connect_async(self.url.host, self.url.port, self.keepalive)
        except (OSError, ValueError) as e:  # a name that does not resolve, a bad port
            self._set_state("disconnected", f"cannot connect: {e}")
        self.client.loop_start()
        self.worker = gevent.spawn(self._run)

    def stop(self) -> None:
        self.state = "stopped"
        if self.worker is not None:
            self.worker.kill()
        self.client.publish(self.topics["online"], b"", qos=QOS, retain=True)
        self.client.disconnect()
        self.client.loop_stop()

    # -- the chat's Mesh: calls down, never waiting -------------------------------------------

    def send_record(self, record: Record) -> None:
        self.wake.set()

    def set_presence(self, presence: dict[int, list[str]]) -> None:
        pass  # presence stays within a mesh: it changes too often for a broker

    def presence(self, room: int) -> list[tuple[str, str]]:
        return []

    def peer_vectors(self) -> Vectors:
        return {n: dict(p.vector) for n, p in self.peers.items()}

    # -- the worker ---------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self.wake.wait(TICK)
            self.wake.clear()
            try:
                self._step(time.monotonic())
            except Exception:  # a bug here must not end the bridge: say it, go on
                log.exception("bridge: step failed")
                self.counters["step_errors"] += 1
                gevent.sleep(1.0)

    def _step(self, now: float) -> None:
        self._take_inbox(now)
        if self.state != "connected":
            return
        if self._seen_generation != self._generation:
            self._seen_generation = self._generation
            self._fresh_connection()
        self._publish_new()
        self._maybe_publish_vector(now)
        if now - self._asked_at >= ASK_INTERVAL:
            self._asked_at = now
            self._ask(now)
        self._answer(now)

    def _fresh_connection(self) -> None:
        """Connected (again): what is stored now goes by catch-up, not live."""
        for origin in self.store.vector.origins():
            self.marks[origin] = self.store.vector.highest(origin)
        self._vector_sent = None
        self.asking.clear()

    def _publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=QOS, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.dropped[f"publish_{mqtt.error_string(info.rc)}"] += 1
            return
        self.counters["messages_out"] += 1
        self.counters["bytes_out"] += len(payload)

    # -- live ---------------------------------------------------------------------------

    def _publish_new(self) -> None:
        fresh: list[tuple[Record, bytes]] = []
        for origin in self.store.vector.origins():
            high, mark = self.store.vector.highest(origin), self.marks.get(origin, 0)
            if high <= mark:
                continue
            self.marks[origin] = high
            for seq in range(max(mark + 1, high - LIVE_SCAN_MAX + 1), high + 1):
                record = self.store.get(origin, seq)
                if record is not None and is_private(record):
                    continue  # never on the broker (see above)
                if record is not None and (origin, seq) not in self.from_broker:
                    fresh.append((record, record_body(record)))
        for chunk in _chunks(fresh, LIVE_BATCH_BYTES):
            self._send_batch(self.topics["records"], chunk)
            self.counters["records_published"] += len(chunk)

    def _send_batch(self, topic: str, chunk: Sequence[tuple[Record, bytes]]) -> None:
        batch = BatchDatagram(
            self.node_id, [r for r, _ in chunk], encoded=[body for _, body in chunk]
        )
        self._publish(topic, batch.serialize(self.keys[0]))

    def _maybe_publish_vector(self, now: float) -> None:
        vector = self.store.vector.as_dict()
        if vector == self._vector_sent or now - self._vector_at < VECTOR_INTERVAL:
            return
        self.beacon_seq += 1
        beacon = BeaconDatagram(
            self.node_id,
            self.node_name,
            self.boot_id,
            vector=vector,
            seq=self.beacon_seq,
        )
        self._publish(self.topics["vector"], beacon.serialize(self.keys[0]), retain=True)
        self._vector_sent, self._vector_at = vector, now

    # -- what the broker brings -----------------------------------------------------------

    def _take_inbox(self, now: float) -> None:
        for _ in range(INBOX_MAX):
            try:
                item = self.inbox.get_nowait()
            except gevent.queue.Empty:
                return
            if item is not None:
                self.counters["messages_in"] += 1
                self.counters["bytes_in"] += len(item[1])
                self._receive(item[0], item[1], now)

    def _receive(self, topic: str, payload: bytes, now: float) -> None:
        where = split_topic(self.url.prefix, topic)
        if where is None:
            self.dropped["bad_topic"] += 1
            return
        kind, node = where
        if node == self.node_id and kind in ("r", "v", "on"):
            return  # our own, back from the broker
        if kind == "on":
            self.peers.setdefault(node, _Peer()).online = payload == b"1"
            return
        if not payload:
            if kind == "v":  # a retained vector cleared
                self.peers.pop(node, None)
            return
        try:
            datagram = parse(payload, self.keys)
        except WireError as e:
            self.dropped[str(e.reason)] += 1
            return
        if kind in ("r", "v") and datagram.sender != node:
            self.dropped["wrong_sender"] += 1
            return
        self._dispatch(kind, datagram, now)

    def _dispatch(self, kind: str, datagram: Any, now: float) -> None:
        if kind == "r" and isinstance(datagram, BatchDatagram):
            self._receive_records(datagram.records)
        elif kind == "v" and isinstance(datagram, BeaconDatagram):
            peer = self.peers.setdefault(datagram.sender, _Peer())
            peer.name, peer.vector = datagram.name, dict(datagram.vector)
        elif kind == "q" and isinstance(datagram, RequestDatagram):
            self._receive_request(datagram)
        elif kind == "a" and isinstance(datagram, BatchDatagram):
            self._receive_records(datagram.records)
            ask = self.asking.get(datagram.sender)
            if ask is not None:
                ask.deadline = now + REQUEST_TIMEOUT
        elif kind == "a" and isinstance(datagram, GoneDatagram):
            self._receive_gone(datagram)
        else:
            self.dropped["unexpected_kind"] += 1

    def _receive_records(self, records: Sequence[Record]) -> None:
        chat = self._chat
        if chat is None:
            raise RuntimeError("bridge messages before start(chat)")
        fresh = []
        for record in records:
            rid = (record.origin, record.seq)
            self.from_broker.add(*rid)
            if record.origin == self.node_id:
                self.dropped["own_origin"] += 1
            elif is_private(record):
                self.dropped["private"] += 1
            elif rid in self.store.vector:
                self.counters["duplicates"] += 1
            else:
                fresh.append(record)
                self.clock.observe(record.hlc)
        if not fresh:
            return
        stored = chat.receive_records(fresh)
        self.counters["records_received"] += len(stored)
        for r in fresh:
            if (r.origin, r.seq) not in self.store.vector:  # refused: never asked again
                self.store.note_refused(r.origin, r.seq)

    # -- catch-up: asking -----------------------------------------------------------------

    def _ask(self, now: float) -> None:
        for peer_id, ask in list(self.asking.items()):
            if self._answered(ask):
                del self.asking[peer_id]
            elif now > ask.deadline:
                del self.asking[peer_id]
                self.counters["requests_timed_out"] += 1
        busy: dict[str, RangeSet] = {}
        for ask in self.asking.values():
            for o, f, la in ask.ranges:
                busy.setdefault(o, RangeSet()).add(f, la)
        online = [p for p, peer in self.peers.items() if peer.online and p not in self.asking]
        random.shuffle(online)
        for peer_id in online:
            wants = self._wants(self.peers[peer_id], busy)
            if not wants:
                continue
            request = RequestDatagram(self.node_id, peer_id, wants)
            self._publish(
                topics(self.url.prefix, peer_id)["requests"], request.serialize(self.keys[0])
            )
            self.asking[peer_id] = _Ask(wants, now + REQUEST_TIMEOUT)
            for o, f, la in wants:
                busy.setdefault(o, RangeSet()).add(f, la)
            self.counters["requests_sent"] += 1

    def _wants(self, peer: _Peer, busy: dict[str, RangeSet]) -> list[tuple[str, int, int]]:
        """Ranges ``peer`` holds and we lack, not asked of anyone else."""
        wants: list[tuple[str, int, int]] = []
        budget = ASK_RECORDS
        for origin, theirs in sorted(peer.vector.items()):
            if origin == self.node_id:
                continue  # our own records: the mesh's own recovery, never a broker's
            for first, last in self.store.vector.missing(origin, min(theirs, MAX_SEQ)):
                if budget <= 0 or len(wants) >= ASK_RANGES:
                    return wants
                if origin in busy and busy[origin].overlap(first, last):
                    continue  # asked of another bridge already
                upto = min(last, first + budget - 1)
                wants.append((origin, first, upto))
                budget -= upto - first + 1
        return wants

    def _answered(self, ask: _Ask) -> bool:
        return all(
            not [m for m in self.store.vector.missing(o, last) if m[1] >= first]
            for o, first, last in ask.ranges
        )

    def _receive_gone(self, datagram: GoneDatagram) -> None:
        ask = self.asking.get(datagram.sender)
        allowed = 0
        for origin, first, last in datagram.ranges:
            for o, f, la in ask.ranges if ask else ():
                lo, hi = max(first, f), min(last, la)
                if o == origin and lo <= hi:
                    self.store.note_gone(origin, lo, hi)
                    allowed += 1
        if allowed:
            self.store.save_state_if_changed()
        else:
            self.dropped["gone_not_asked"] += 1

    # -- catch-up: answering --------------------------------------------------------------

    def _receive_request(self, request: RequestDatagram) -> None:
        if request.target != self.node_id:
            self.dropped["not_for_us"] += 1
            return
        if request.sender not in self.owed and len(self.owed) >= MAX_ASKERS:
            self.dropped["too_many_askers"] += 1
            return
        ranges = [[o, f, min(la, f + ASK_RECORDS - 1)] for o, f, la in request.ranges]
        self.owed[request.sender] = _Queue(ranges[: min(ASK_RANGES, MAX_REQUEST_RANGES)])
        self.counters["requests_answered"] += 1

    def _answer(self, now: float) -> None:
        while self.owed and self.bucket.take(ANSWER_BATCH_BYTES, now):
            asker, queue = next(iter(self.owed.items()))
            self.owed.move_to_end(asker)  # round robin among askers
            records, gone = self._fill(queue)
            topic = topics(self.url.prefix, asker)["answers"]
            if records:
                self._send_batch(topic, records)
                self.counters["records_answered"] += len(records)
            if gone:
                self._publish(topic, GoneDatagram(self.node_id, gone).serialize(self.keys[0]))
            if not queue.ranges:
                del self.owed[asker]

    def _fill(self, queue: _Queue) -> tuple[list[tuple[Record, bytes]], list[tuple[str, int, int]]]:
        """One answer's worth from the front of ``queue``."""
        records: list[tuple[Record, bytes]] = []
        gone: list[tuple[str, int, int]] = []
        size = 0
        while queue.ranges and size < ANSWER_BATCH_BYTES:
            cursor = queue.ranges[0]
            origin, seq, last = cursor
            record = self.store.get(origin, seq)
            if record is not None and is_private(record):
                gone.append((origin, seq, seq))  # never on the broker: gone, for the asker
                size += GONE_ENTRY_BYTES
                cursor[1] = seq + 1
            elif record is not None:
                body = record_body(record)
                if records and size + len(body) > ANSWER_BATCH_BYTES:
                    break
                records.append((record, body))
                size += len(body)
                cursor[1] = seq + 1
            else:
                through = min(self.store.gone_through(origin, seq), last)
                if through:
                    gone.append((origin, seq, through))
                cursor[1] = max(seq, through) + 1
            if cursor[1] > last:
                queue.ranges.pop(0)
        return records, gone

    # -- status ---------------------------------------------------------------------------

    def lag(self) -> dict[str, int]:
        """Records the other bridges hold that we lack, and the reverse."""
        ours = self.store.vector.as_dict()
        behind = ahead = 0
        for peer in self.peers.values():
            behind = max(behind, _count_ahead(peer.vector, ours, self.node_id))
            ahead = max(ahead, _count_ahead(ours, peer.vector, ""))
        return {"records_to_get": behind, "records_to_give": ahead}

    def status(self) -> dict[str, Any]:
        ours = self.store.vector.as_dict()
        return {
            "url": self.url.shown,
            "state": self.state,
            "for_s": round(time.monotonic() - self.since, 3),
            "last_error": self.last_error or None,
            "lag": self.lag(),
            "peers": {
                node: {
                    "name": peer.name,
                    "online": peer.online,
                    "ahead_of_us": _count_ahead(peer.vector, ours, self.node_id),
                    "behind_us": _count_ahead(ours, peer.vector, ""),
                }
                for node, peer in sorted(self.peers.items())
            },
            "asking": len(self.asking),
            "answering": len(self.owed),
            "counters": dict(self.counters),
            "dropped": dict(self.dropped),
        }


def _count_ahead(theirs: dict[str, int], ours: dict[str, int], skip: str) -> int:
    return sum(max(0, n - ours.get(o, 0)) for o, n in theirs.items() if o != skip)


def _chunks(items: list[tuple[Record, bytes]], limit: int) -> list[list[tuple[Record, bytes]]]:
    """``items`` in runs of at most ``limit`` bytes of bodies (at least one each)."""
    out: list[list[tuple[Record, bytes]]] = []
    size = 0
    for item in items:
        if not out or size + len(item[1]) > limit:
            out.append([])
            size = 0
        out[-1].append(item)
        size += len(item[1])
    return out
