"""The bridge's flags (app/config.py) and topic layout (app/bridge.py)."""

from __future__ import annotations

import pytest

from app.bridge import split_topic, subscriptions, topics
from app.config import BridgeUrl, parse_args, parse_bridge_url

NODE = "0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("mqtt://broker.example/valley", BridgeUrl(False, "broker.example", 1883, "valley")),
        ("mqtts://b.example/v/chat", BridgeUrl(True, "b.example", 8883, "v/chat")),
        ("mqtt://ann@10.0.0.1:1884/v/", BridgeUrl(False, "10.0.0.1", 1884, "v", "ann")),
        ("mqtt://[::1]/v", BridgeUrl(False, "::1", 1883, "v")),
    ],
)
def test_bridge_urls(text: str, url: BridgeUrl) -> None:
    assert parse_bridge_url(text) == url


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("http://broker.example/v", "mqtt://"),
        ("mqtt://ann:secret@broker.example/v", "--bridge-password-file"),
        ("mqtt://broker.example", "topic prefix"),
        ("mqtt://broker.example/", "topic prefix"),
        ("mqtt://broker.example/v/+", "topic prefix"),
        ("mqtt://broker.example/v/#", "topic prefix"),
        ("mqtt://broker.example/$SYS", "topic prefix"),
        ("mqtt://broker.example/a/b/c/d/e", "topic prefix"),
        ("mqtt://broker.example:0/v", "port"),
        ("mqtt://broker.example:99999/v", "port"),
        ("mqtt:///v", "host"),
    ],
)
def test_bad_bridge_urls_say_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("$", r"\$").replace("+", r"\+")):
        parse_bridge_url(text)


def test_shown_url_has_no_password() -> None:
    url = parse_bridge_url("mqtts://ann@broker.example/valley")
    assert url.shown == "mqtts://ann@broker.example:8883/valley"


def test_password_on_the_command_line_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--bridge", "mqtt://ann:secret@broker.example/v"])
    assert "--bridge-password-file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--bridge-password-file", "p"], "need --bridge"),
        (["--bridge", "mqtt://b.example/v", "--bridge-ca-file", "ca.pem"], "mqtts://"),
        (["--bridge", "mqtt://b.example/v", "--bridge-password-file", "p"], "needs a user"),
        (["--bridge", "mqtt://b.example/v", "--bridge-keepalive", "1"], "must be 2 to 3600"),
    ],
)
def test_bridge_flags_that_do_not_fit(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert says in capsys.readouterr().err


def test_bridge_flags() -> None:
    config = parse_args(
        [
            "--bridge",
            "mqtts://ann@b.example/v",
            "--bridge-password-file",
            "/etc/pw",
            "--bridge-ca-file",
            "/etc/ca.pem",
        ]
    )
    assert config.bridge == BridgeUrl(True, "b.example", 8883, "v", "ann")
    assert str(config.bridge_password_file) == "/etc/pw"
    assert parse_args([]).bridge is None


def test_topics_round_trip() -> None:
    own = topics("v/chat", NODE)
    assert own["records"] == f"v/chat/r/{NODE}"
    for topic in own.values():
        kind, node = split_topic("v/chat", topic) or ("", "")
        assert node == NODE and kind in ("r", "v", "on", "q", "a")
    assert f"v/chat/q/{NODE}" in subscriptions("v/chat", NODE)
    for bad in ["v/chat/x/" + NODE, "v/chat/r/NOTHEX", "other/r/" + NODE, f"v/chat/r/{NODE}/x"]:
        assert split_topic("v/chat", bad) is None
