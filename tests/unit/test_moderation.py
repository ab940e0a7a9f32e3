from __future__ import annotations

import itertools

import pytest

from app.moderation import Moderation
from node.record import Record, RecordKind

BOSS = "b" * 16 + ":1"  # the admin's account id
ADMINS = [f"Boss={BOSS}"]


def action(seq: int, hlc: int, what: str, user: str) -> Record:
    return Record(
        "a" * 16,
        seq,
        hlc,
        RecordKind.MODERATION,
        0,
        {"action": what, "user": user, "by": "boss", "account": BOSS},
    )


def test_admins_match_without_case() -> None:
    m = Moderation(ADMINS)
    assert m.may_act("boss", BOSS) and m.may_act("BOSS", BOSS) and not m.may_act("bob", BOSS)


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_latest_ban_or_unban_wins_in_any_order(order: tuple[int, ...]) -> None:
    records = [
        action(1, 10, "ban", "Eve"),
        action(2, 20, "unban", "eve"),
        action(3, 30, "ban", "EVE"),
    ]
    m = Moderation(ADMINS)
    for i in order:
        m.add(records[i])
    assert m.is_banned("eve") and m.banned() == ["EVE"]
    m.add(action(4, 25, "unban", "eve"))  # older than the last ban: no effect
    assert m.is_banned("eve")
    m.add(action(5, 40, "unban", "eve"))
    assert not m.is_banned("eve") and m.banned() == []


def test_only_moderation_records() -> None:
    with pytest.raises(ValueError, match="not a moderation record"):
        Moderation().add(Record("a" * 16, 1, 1, RecordKind.MESSAGE, 1, {}))
