"""The upload quota survives a restart (app/attachments.py ``UploadQuota``):
a real router killed between uploads (SIGKILL: no clean stop) and started
again on the same data folder still refuses what is over the account's 24
hours, before the body is read, and still takes what is left.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.helpers import Router, free_port
from tests.integration.test_blobs_web import headers_only, status_line, upload, upload_head

MAX_UPLOAD = 64 * 1024
PER_DAY = 100 * 1024


def test_a_restart_does_not_give_an_account_a_fresh_day(tmp_path: Path) -> None:
    extra = ["--no-mesh", "--max-upload", str(MAX_UPLOAD), "--upload-bytes-per-day", str(PER_DAY)]
    r = Router(tmp_path / "alpha" / "data", free_port(), "alpha", extra)
    r.data_dir.mkdir(parents=True)
    r.start()
    try:
        ann = r.user("ann")
        piece = 40 * 1024
        for i in range(2):  # 80 KB of the 100 KB
            code, _, found = upload(r, ann, bytes([i]) * piece, "a.bin")
            assert code == 200, found
        kept = json.loads((r.data_dir / "uploads.json").read_text())
        assert [n for _, n in next(iter(kept["accounts"].values()))] == [piece, piece]

        r.stop(signal.SIGKILL)  # a power cut, as far as the process can tell
        r.start()
        ann = r.user("ann", register=False)
        answer, closed, _ = headers_only(r, upload_head(r, ann, str(piece)))
        assert status_line(answer).startswith("HTTP/1.1 429 "), answer[:300]
        assert closed, "refused before the body, as before the restart"
        assert b'"left": ' + str(PER_DAY - 2 * piece).encode() in answer
        assert r.status()["blobs"]["quota"]["accounts"] == 1

        # What is left still fits, and is counted across the next restart too.
        code, _, found = upload(r, ann, b"\x09" * (PER_DAY - 2 * piece), "c.bin")
        assert code == 200, found
        r.stop()
        r.start()
        ann = r.user("ann", register=False)
        answer, _, _ = headers_only(r, upload_head(r, ann, "1"))
        assert status_line(answer).startswith("HTTP/1.1 429 "), answer[:300]
        # Another account on the same router has its own whole day.
        bob = r.user("bob")
        code, _, found = upload(r, bob, b"\x07" * piece, "b.bin")
        assert code == 200, found
    finally:
        r.stop()
