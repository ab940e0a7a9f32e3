"""A photo across a line of routers A - B - C in network namespaces (C does
not hear A): time until C's page has the message with its thumbnail, time
until C's page has the full photo (C asks B, B fetches it from A: each hop
paced at app/blobfetch.py SERVE_RATE, 1 MB/s, as catch-up), and the bytes
every router sent on its mesh interfaces (Ethernet frames, the kernel's
counters) for the record and for the photo, against the photo's size.

Real routers (``python -m app``), real uploads, WebSockets and fetches;
``LOSS`` % of packets dropped each way on both links (nft).  Medians of
``RUNS`` photos per loss rate.  Needs root; about a minute.

    .venv/bin/python tests/bench/bench_blob_netns.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from common import record_results, table

from tests.netns.netlab import Lab, available, ns_run, sweep
from tests.netns.test_blobs_netns import (
    blob_path,
    get_blob,
    heard,
    photo,
    post_photo,
    start,
    upload,
)
from tests.netns.test_mesh_netns import key_file

RUNS = 3
LOSSES = (0, 10)
IFACES = {"ra": ["m0"], "rb": ["m0", "m1"], "rc": ["m1"]}


def sent_bytes(lab: Lab) -> int:
    total = 0
    for host, ifaces in IFACES.items():
        for iface in ifaces:
            path = f"/sys/class/net/{iface}/statistics/tx_bytes"
            total += int(ns_run(lab.hosts[host].ns, "cat", path).stdout)
    return total


def one_loss(loss: int, tmp: Path) -> dict[str, float]:
    lab = Lab()
    try:
        lab.add_host("ra", [0])
        lab.add_host("rb", [0, 1])
        lab.add_host("rc", [1])
        key = key_file(tmp / "mesh.key")
        routers = [start(lab, tmp, n, key) for n in ("ra", "rb", "rc")]
        a, b, c = routers
        heard(routers)
        if loss:
            lab.add_loss("ra", 0, loss)
            lab.add_loss("rc", 1, loss)
        ann, cat = a.user("ann"), c.user("cat")
        wa, wc = a.ws(ann), c.ws(cat)
        wa.recv_type("history")
        wc.recv_type("history")
        runs: dict[str, list[float]] = {"thumb": [], "full": [], "record_x": [], "photo_x": []}
        size = 0
        for i in range(RUNS):
            data = photo()
            size = len(data)
            found = upload(a, ann, data, f"p{i}.jpg")
            before = sent_bytes(lab)
            t0 = time.monotonic()
            mid = post_photo(wa, found, f"b{i}")
            wc.recv_until(lambda f, mid=mid: f.get("type") == "message" and f["id"] == mid, 30)
            runs["thumb"].append(time.monotonic() - t0)
            time.sleep(1.0)  # the relays' copies and NACK repairs are sent
            record_bytes = sent_bytes(lab) - before
            before = sent_bytes(lab)
            status, body, took = get_blob(c, cat, str(found["sha"]))
            assert status == 200 and body == data, status
            assert blob_path(b, str(found["sha"])).exists()
            runs["full"].append(took)
            runs["photo_x"].append((sent_bytes(lab) - before) / size)
            runs["record_x"].append(record_bytes)
        for w in (wa, wc):
            w.close()
        return {k: statistics.median(v) for k, v in runs.items()} | {"size": size}
    finally:
        lab.close()


def main() -> None:
    if not available():
        print("skipped: network namespaces need root and iproute2 (ip)")
        return
    sweep()
    figures: dict[str, float] = {}
    rows = []
    for loss in LOSSES:
        with tempfile.TemporaryDirectory(prefix="cc-blobbench-") as tmp:
            m = one_loss(loss, Path(tmp))
        rows.append(
            (
                f"{loss} %",
                f"{m['size']:,.0f} B",
                f"{m['thumb']:.2f} s",
                f"{m['full']:.2f} s",
                f"{m['record_x']:,.0f} B",
                f"{m['photo_x']:.2f}x",
            )
        )
        figures |= {
            f"blobline.loss{loss}.thumbnail_s": m["thumb"],
            f"blobline.loss{loss}.full_s": m["full"],
            f"blobline.loss{loss}.record_bytes": m["record_x"],
            f"blobline.loss{loss}.photo_bytes_x": m["photo_x"],
        }
    table(
        f"A photo from A to C through B (medians of {RUNS}; bytes: every router's mesh interfaces)",
        rows,
        ("loss", "photo", "thumbnail on C", "full photo on C", "record bytes", "photo bytes"),
    )
    record_results(figures)


if __name__ == "__main__":
    main()
