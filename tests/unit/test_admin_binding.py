"""Admin rights bound to an account id (app/moderation.py), and login and
registration attempts counted before their hash (app/throttle.py): the pure
parts, with real stores in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.accounts import AccountError
from app.chat import Chat, ChatError
from app.config import parse_args
from app.moderation import ChatPolicy, Moderation, parse_admin
from app.throttle import (
    IN_FLIGHT_RETRY,
    LOGIN_FAILURES_PER_NAME,
    LOGINS_IN_FLIGHT_PER_ADDRESS,
    REGISTRATIONS_PER_ADDRESS,
    LoginThrottle,
    RegistrationThrottle,
)
from node.clock import pack
from node.record import Record, RecordKind
from node.store import Store

BASE_MS = 1_750_000_000_000  # a wall time in 2025
REAL = "0123456789abcdef:1"  # the admin's registration, made on another router
SQUATTER = "cccccccccccccccc:1"
# A well-formed hash (16-byte salt, 32-byte digest); no password matches it.
HASH = "scrypt$16384$8$1$c3Nzc3Nzc3Nzc3Nzc3Nzcw==$aGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGhoaGg="


def record(origin: str, seq: int, hlc: int, kind: RecordKind, room: int, **body: str) -> Record:
    return Record(origin, seq, hlc, kind, room, body)


def ban(account: str, seq: int = 1, by: str = "boss", user: str = "vic") -> Record:
    return record(
        account[:16],
        seq,
        1000 + seq,
        RecordKind.MODERATION,
        0,
        action="ban",
        by=by,
        account=account,
        user=user,
    )


# -- the binding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("boss", ("boss", None)),
        (f"Boss={REAL}", ("Boss", REAL)),
        (f" boss={REAL} ", ("boss", REAL)),
    ],
)
def test_parse_admin(text: str, parsed: tuple[str, str | None]) -> None:
    assert parse_admin(text) == parsed


@pytest.mark.parametrize(
    "text", ["", "bo ss", "boss=", "boss=xyz", "boss=0123:1", f"boss={REAL}x", "=" + REAL]
)
def test_parse_admin_refuses_what_is_not_a_binding(text: str) -> None:
    with pytest.raises(ValueError, match="admin"):
        parse_admin(text)


def test_the_command_line_checks_the_binding(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--admin", "boss", "--admin", f"eve={REAL}"]).admin == [
        "boss",
        f"eve={REAL}",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--admin", "boss=not-an-id"])
    assert "not an account id" in capsys.readouterr().err


def test_a_name_alone_grants_nothing_a_bound_account_does() -> None:
    m = Moderation(["boss", f"eve={REAL}"])
    assert not m.may_act("boss", SQUATTER) and not m.reserved("boss")
    assert m.may_act("EVE", REAL) and not m.may_act("eve", SQUATTER)
    assert m.reserved("Eve") and not m.reserved("ann")
    assert m.authorizes(ban(REAL, by="eve")) and m.refusal(ban(REAL, by="eve")) is None
    for refused in (ban(SQUATTER, by="eve"), ban(REAL, by="boss"), ban(SQUATTER)):
        assert not m.authorizes(refused) and m.refusal(refused) == "not_admin"
    legacy = record("a" * 16, 9, 9, RecordKind.MODERATION, 0, action="ban", by="eve", user="x")
    assert not m.authorizes(legacy), "a record without its author's account counts nowhere"


def test_bans_only_from_the_bound_account() -> None:
    m = Moderation([f"boss={REAL}"])
    m.add(ban(SQUATTER, seq=5))
    assert not m.is_banned("vic")
    m.add(ban(REAL, seq=2))
    assert m.is_banned("vic")


# -- a router: the store and the chat -------------------------------------------------------


def account(origin: str, seq: int, hlc: int, name: str) -> Record:
    return record(origin, seq, hlc, RecordKind.ACCOUNT, 0, name=name, hash=HASH)


def message(seq: int, ms: int) -> Record:
    """A message sent ``ms`` after BASE_MS, stamped then (the clears' HLCs
    below count in the same milliseconds)."""
    return Record(
        "d" * 16,
        seq,
        pack(BASE_MS + ms, 0),
        RecordKind.MESSAGE,
        1,
        {"author": "vic", "node": "b", "time": BASE_MS + ms, "text": f"m{seq}"},
    )


def clear(account_id: str, seq: int, ms: int) -> Record:
    return record(
        account_id[:16],
        seq,
        pack(BASE_MS + ms, 0),
        RecordKind.MODERATION,
        1,
        action="clear",
        by="boss",
        account=account_id,
    )


def router(path: Path, admins: list[str]) -> Chat:
    store = Store(path, 2, policy=ChatPolicy(Moderation(admins).authorizes))
    return Chat(store, "b", admins=admins)


def test_a_squatters_clear_from_a_peer_is_refused_and_counted(tmp_path: Path) -> None:
    chat = router(tmp_path, [f"boss={REAL}"])
    assert (
        len(
            chat.receive_records([account("c" * 16, 1, 10, "boss"), message(1, 20), message(2, 30)])
        )
        == 3
    )
    assert not chat.receive_records([clear(SQUATTER, 2, 40)])
    assert chat.refused["not_admin"] == 1 and chat.store.count(1) == 2
    assert chat.receive_records([clear(REAL, 2, 50)])
    assert chat.store.count(1) == 0


def test_a_squatters_clear_on_disk_takes_nothing_out(tmp_path: Path) -> None:
    # Written by a router that let the squatter act (an older version).
    store = Store(tmp_path, 2, policy=ChatPolicy(lambda record: True))
    for r in (
        account("c" * 16, 1, 10, "boss"),
        message(1, 20),
        message(2, 30),
        clear(SQUATTER, 2, 40),
    ):
        store.append(r)
    assert store.count(1) == 0
    store.close()
    chat = router(tmp_path, [f"boss={REAL}"])
    assert chat.store.count(1) == 2, "the clear is held, without effect"
    assert chat.store.get("c" * 16, 2) is not None


def test_the_squatter_may_neither_act_nor_take_a_bound_name(tmp_path: Path) -> None:
    chat = router(tmp_path, ["boss", f"eve={REAL}"])
    assert len(chat.receive_records([account("c" * 16, 1, 10, "boss"), message(1, 20)])) == 2
    with pytest.raises(ChatError, match="Only an admin"):
        chat.moderate("boss", 1, "clear")  # owns a name given without an id
    with pytest.raises(AccountError, match="taken"):
        chat.register("EVE", "password1", "password1")  # bound, not yet heard of here
    assert chat.receive_records([account("0123456789abcdef", 1, 5, "eve")])
    chat.moderate("eve", 1, "clear")
    assert chat.store.count(1) == 0
    assert chat.store.moderation[-1].body == {"action": "clear", "by": "eve", "account": REAL}


# -- attempts counted before the hash -------------------------------------------------------


def test_a_login_counts_as_failed_before_its_check() -> None:
    t = LoginThrottle()
    waits = []
    for _ in range(LOGIN_FAILURES_PER_NAME + 1):
        with t.attempt(f"10.0.0.{len(waits)}", "ann", 0.0) as verdict:
            waits.append(verdict.wait)  # all entered before any check ended
    assert waits[:-1] == [0] * LOGIN_FAILURES_PER_NAME and waits[-1] > 0


def test_logins_in_flight_are_bounded_and_released() -> None:
    t = LoginThrottle()
    with t.attempt("10.0.0.1", "a", 0.0) as first, t.attempt("10.0.0.1", "b", 0.0) as second:
        assert first.wait == second.wait == 0 and LOGINS_IN_FLIGHT_PER_ADDRESS == 2
        with t.attempt("10.0.0.1", "c", 0.0) as third:
            assert third.busy and third.wait == IN_FLIGHT_RETRY
        with t.attempt("10.0.0.2", "c", 0.0) as other_phone:
            assert other_phone.wait == 0
    assert len(t.addresses) == len(t.names) == 0
    assert t.by_address.level("10.0.0.1", 0.0) == 2, "the busy one was not counted"


def test_a_success_gives_back_what_was_counted_ahead() -> None:
    t = LoginThrottle()
    with t.attempt("10.0.0.1", "ann", 0.0):
        pass
    t.succeeded("10.0.0.1", "ann", 0.0)
    assert t.by_address.level("10.0.0.1", 0.0) == 0 and t.by_name.level("ann", 0.0) == 0


def test_registrations_counted_ahead_and_refunded_when_refused() -> None:
    t = RegistrationThrottle()
    with t.attempt("10.0.0.1", "ann", 0.0) as a, t.attempt("10.0.0.2", "ANN", 0.0) as b:
        assert a.wait == 0 and b.busy, "one registration of a name at a time"
    for i in range(REGISTRATIONS_PER_ADDRESS - 1):
        with t.attempt("10.0.0.1", f"u{i}", 0.0) as verdict:
            assert verdict.wait == 0
    with t.attempt("10.0.0.1", "late", 0.0) as verdict:
        assert verdict.wait > 0
    t.refund("10.0.0.1", 0.0)  # one of them was refused after all
    with t.attempt("10.0.0.1", "late", 0.0) as verdict:
        assert verdict.wait == 0
