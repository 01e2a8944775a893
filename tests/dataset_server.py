"""What the dataset-preparation tests share: a local HTTP server on 127.0.0.1 that serves archives and the faults
real servers produce (dropped connections with or without Content-Length, a short Content-Length, 416s, ETags and
If-Range, status answers such as 429 with Retry-After, one byte every few seconds, gzip transfer encoding,
redirects, a body held until the test lets it go), the archives in the official ADE20K and COCO layouts, and the
checks every test makes (one error line, no leftovers)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import runpy
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image

from modeling_maskformer.data.prepare import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PREPARE = ROOT / "scripts" / "prepare_data.py"
ADE_URL_PATH = urlsplit(DATASETS["ade20k"].archives["all"].url).path


# ----------------------------------------------------------------------------------------------------------
# The server.
# ----------------------------------------------------------------------------------------------------------
class Site:
    """What the server serves (path -> bytes), what it was asked, and the faults it injects (by path)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.headers: list[dict[str, str]] = []  # every request's headers
        self.times: list[float] = []  # when each request arrived (time.monotonic)
        self.drop_after: dict[str, int] = {}  # bytes sent before the connection is closed, once
        self.always_drop: dict[str, int] = {}  # the same, on every request
        self.no_length: set[str] = set()  # no Content-Length header
        self.short_length: dict[str, int] = {}  # once: a 200 claiming (and sending) only this many bytes
        self.etags: dict[str, str] = {}  # ETag sent; If-Range is honoured against it
        self.ignore_if_range: set[str] = set()  # Range honoured, If-Range ignored (a partial of a changed file)
        self.refuse_range: set[str] = set()  # 416 without Content-Range to every Range request
        self.answers: dict[str, list[tuple[int, dict[str, str]]]] = {}  # statuses sent first, in order
        self.drip: dict[str, float] = {}  # one byte every that many seconds
        self.gzip: set[str] = set()  # Content-Encoding: gzip
        self.redirects: dict[str, str] = {}  # path -> Location
        self.hold: dict[str, threading.Event] = {}  # the body waits for the event after the first byte
        # once: the action called after sending that many bytes
        self.on_bytes: dict[str, tuple[int, Callable[[], None]]] = {}
        self.closed = threading.Event()
        self.connections = 0  # accepted, TLS handshakes included (failed ones too)

    def add(self, url: str, payload: bytes) -> None:
        self.files[urlsplit(url).path] = payload


class FaultHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        site: Site = self.server.site
        path, range_header = self.path, self.headers.get("Range")
        site.requests.append((path, range_header))
        site.headers.append(dict(self.headers))
        site.times.append(time.monotonic())
        self.close_connection = True
        if path in site.redirects:
            return self.reply(302, {"Location": site.redirects[path], "Content-Length": "0"})
        if site.answers.get(path):
            status, headers = site.answers[path].pop(0)
            return self.reply(status, {"Content-Length": "0", **headers})
        body = site.files.get(path)
        if body is None:
            return self.send_error(404)
        headers = {"Accept-Ranges": "bytes"}
        if path in site.etags:
            headers["ETag"] = site.etags[path]
        if path in site.short_length:
            body = body[: site.short_length.pop(path)]
        start, status = 0, 200
        if_range = self.headers.get("If-Range")
        if range_header and (if_range is None or path in site.ignore_if_range or if_range == site.etags.get(path)):
            if path in site.refuse_range:
                return self.reply(416, {"Content-Length": "0"})
            start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
            if start >= len(body):
                return self.reply(416, {"Content-Range": f"bytes */{len(body)}", "Content-Length": "0"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        payload = body[start:]
        if path in site.gzip:
            payload, headers["Content-Encoding"] = gzip.compress(payload), "gzip"
        if path not in site.no_length:
            headers["Content-Length"] = str(len(payload))
        self.reply(status, headers)
        drop = site.drop_after.pop(path, site.always_drop.get(path))
        self.send_body(site, path, payload if drop is None else payload[:drop])

    def reply(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def send_body(self, site: Site, path: str, payload: bytes) -> None:
        try:
            if path in site.drip:
                for i in range(len(payload)):
                    if site.closed.wait(site.drip[path] if i else 0):
                        return
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                return
            if path in site.hold or path in site.on_bytes:
                count, action = site.on_bytes.pop(path, (1, None))
                self.wfile.write(payload[:count])
                self.wfile.flush()
                if action is not None:
                    action()
                if path in site.hold:
                    site.hold[path].wait(60)
                payload = payload[count:]
            self.wfile.write(payload)
            self.wfile.flush()
        except OSError:  # the client went away (a test that interrupts it)
            pass

    def log_message(self, *args):  # quiet
        pass


class CountingServer(ThreadingHTTPServer):
    def get_request(self):
        self.site.connections += 1
        return super().get_request()


@contextmanager
def serve(handler=FaultHandler, wrap=None):
    """A threaded server on 127.0.0.1; `wrap` turns its socket into a TLS one. Yields the Site (`site.mirror`)."""
    server = CountingServer(("127.0.0.1", 0), handler)
    if wrap is not None:
        server.socket = wrap(server.socket)
    server.site = Site()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if wrap is not None else "http"
    server.site.mirror = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    server.site.server = server
    try:
        yield server.site
    finally:
        server.site.closed.set()
        for event in server.site.hold.values():
            event.set()
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------------------------------------
# Archives in the official layouts.
# ----------------------------------------------------------------------------------------------------------
def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


ADE_COUNTS = {"train": 3, "validation": 2}


def ade_zip() -> bytes:
    """ADEChallengeData2016.zip as published: images/ and annotations/ per split (ADE_train_00000001.jpg, ...),
    objectInfo150.txt (tab-separated Idx, Ratio, Train, Val, Name) and sceneCategories.txt."""
    rng = np.random.default_rng(0)
    entries = {}
    for split, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for i in range(1, ADE_COUNTS["train" if split == "training" else "validation"] + 1):
            height, width = 40 + 8 * i, 48
            labels = np.zeros((height, width), np.uint8)  # 0 = other
            labels[: height // 2] = 3 * i  # ADE class 3i (training id 3i - 1)
            labels[height // 2 :, : width // 2] = 8
            entries[f"ADEChallengeData2016/images/{split}/{prefix}_{i:08d}.jpg"] = encoded(
                rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "JPEG"
            )
            entries[f"ADEChallengeData2016/annotations/{split}/{prefix}_{i:08d}.png"] = encoded(labels, "PNG")
    names = "\n".join(f"{k}\t0.01\t10\t1\tclass{k};synonym" for k in range(1, 151))
    entries["ADEChallengeData2016/objectInfo150.txt"] = f"Idx\tRatio\tTrain\tVal\tName\n{names}\n".encode()
    entries["ADEChallengeData2016/sceneCategories.txt"] = b"ADE_train_00000001 airport_terminal\n"
    return zip_bytes(entries)


def coco_archives() -> dict[str, bytes]:
    """panoptic_annotations_trainval2017.zip (annotations/panoptic_{train,val}2017.json and the inner
    annotations/panoptic_{train,val}2017.zip of PNGs) and val2017.zip (val2017/*.jpg), as published."""
    rng = np.random.default_rng(1)
    categories = [
        {"id": 1, "name": "person", "isthing": 1, "supercategory": "person"},
        {"id": 184, "name": "tree-merged", "isthing": 0, "supercategory": "plant"},
    ]
    outer, images = {}, {}
    for split, count in (("train", 1), ("val", 2)):
        pngs, payload = {}, {"images": [], "annotations": [], "categories": categories}
        for i in range(count):
            image_id = 139 + i
            stem = f"{image_id:012d}"
            ids = np.zeros((32, 40, 3), np.uint8)
            ids[:16, :, 0] = 5  # segment id 5 (R + 256 G + 256^2 B)
            ids[16:, :20, 1] = 1  # segment id 256
            pngs[f"panoptic_{split}2017/{stem}.png"] = encoded(ids, "PNG")
            payload["images"].append({"id": image_id, "file_name": f"{stem}.jpg", "height": 32, "width": 40})
            payload["annotations"].append(
                {
                    "image_id": image_id,
                    "file_name": f"{stem}.png",
                    "segments_info": [
                        {"id": 5, "category_id": 184, "iscrowd": 0, "area": 640, "bbox": [0, 0, 40, 16]},
                        {"id": 256, "category_id": 1, "iscrowd": 0, "area": 320, "bbox": [0, 16, 20, 16]},
                    ],
                }
            )
            if split == "val":
                images[f"val2017/{stem}.jpg"] = encoded(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8), "JPEG")
        outer[f"annotations/panoptic_{split}2017.json"] = json.dumps(payload).encode()
        outer[f"annotations/panoptic_{split}2017.zip"] = zip_bytes(pngs)
    return {"annotations": zip_bytes(outer), "validation": zip_bytes(images)}


def pinned(archive, payload: bytes, **overrides):
    return dataclasses.replace(archive, size=len(payload), sha256=hashlib.sha256(payload).hexdigest(), **overrides)


def serve_ade(site: Site, monkeypatch) -> bytes:
    """The ADE archive on the site; the registry pins its size and SHA-256 (and the split counts) instead of the
    real archive's, everything else (URL path, layout checks) as for the real one."""
    payload = ade_zip()
    spec = DATASETS["ade20k"]
    site.add(spec.archives["all"].url, payload)
    served = dataclasses.replace(
        spec, archives={"all": pinned(spec.archives["all"], payload)}, split_counts=ADE_COUNTS
    )
    monkeypatch.setitem(DATASETS, "ade20k", served)
    return payload


def serve_coco_val(site: Site, monkeypatch) -> dict[str, bytes]:
    """The COCO annotation and val2017 archives on the site, pinned in the registry like `serve_ade`."""
    spec, payloads = DATASETS["coco_panoptic"], coco_archives()
    archives = dict(spec.archives)
    for role, payload in payloads.items():
        site.add(spec.archives[role].url, payload)
        archives[role] = pinned(spec.archives[role], payload)
    monkeypatch.setitem(
        DATASETS,
        "coco_panoptic",
        dataclasses.replace(spec, archives=archives, split_counts={"train": 1, "validation": 2}),
    )
    return payloads


# ----------------------------------------------------------------------------------------------------------
# Running the script and checking what it leaves.
# ----------------------------------------------------------------------------------------------------------
def run_script(script: Path, *args: str):
    return runpy.run_path(str(script))["main"](list(args))


def error_line(monkeypatch, capsys, script: Path, *args: str, code: int = 2, kind: str = "error: ") -> str:
    """Run `script` as the command line does; it must exit with `code` and print exactly one `script: KIND...` line
    (after any log lines) and no traceback. Returns that line."""
    monkeypatch.setattr(sys, "argv", [script.name, *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    lines = [line for line in err.splitlines() if line.startswith(f"{script.name}: {kind}")]
    assert len(lines) == 1 and "Traceback" not in err and err.rstrip().endswith(lines[0]), err
    return lines[0]


def one_line_error(monkeypatch, capsys, script: Path, *args: str) -> str:
    return error_line(monkeypatch, capsys, script, *args)


def leftovers(root: Path) -> list[str]:
    """Temporary folders, journals, partial downloads and their validators, lock holders left under root."""
    ends = (".tmp", ".part", ".part.json", ".moving.json", ".owner.json")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.name.endswith(ends))
