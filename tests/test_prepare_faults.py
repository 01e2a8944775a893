"""The faults real servers and real users cause to scripts/prepare_data.py (issue 25), each served from 127.0.0.1 with
archives in the official layouts (`dataset_server.py`): two runs at once, a connection dropped without
Content-Length, a short Content-Length, 416 answers, a server that drips one byte every few seconds, a stale partial
file (with and without validators), 429/503 with Retry-After, 404 behind a redirect, gzip encoding, an untrusted
certificate, a bad --mirror, Ctrl-C and SIGTERM during a download and SIGTERM during the extraction (a real process,
a real signal). Each ends in one line that names the cause and the way out, keeps every valid byte, and a plain
rerun finishes the job. Also: plain progress lines in a log, a kept archive verified before it is trusted, and a
--help that does not import torch."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from modeling_maskformer.data import download as download_module
from modeling_maskformer.data import progress as progress_module
from modeling_maskformer.data.download import DataPreparationError, DownloadPolicy
from modeling_maskformer.data.prepare import DATASETS, MARKER, prepare
from modeling_maskformer.data.registry import registry_table

from dataset_server import (
    ADE_COUNTS,
    ADE_URL_PATH,
    PREPARE,
    leftovers,
    one_line_error,
    run_script,
    serve,
    serve_ade,
)

# A quick back-off: the waits are not what these tests test.
FAST = DownloadPolicy(retries=2, backoff_factor=0.01)
PART = Path("downloads") / "ADEChallengeData2016.zip.part"


@pytest.fixture
def site():
    with serve() as site:
        yield site


@pytest.fixture
def served_ade(site, monkeypatch):
    return serve_ade(site, monkeypatch)


def prepare_ade(site, root, **kwargs):
    return prepare(
        "ade20k", root, mirror=site.mirror, progress=False, download_policy=kwargs.pop("policy", FAST), **kwargs
    )


def cli_args(site, root, *extra):
    return ("ade20k", "--root", str(root), "--mirror", site.mirror, "--no_progress", *extra)


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# A prepare_data.py process against the test's server: the registry pinned to the served archive, as `serve_ade`
# does in this process; optionally every extracted file slowed down (and announced on stdout) so that a signal can
# be sent in the middle of the extraction.
DRIVER = textwrap.dedent("""
    import dataclasses, json, runpy, shutil, sys, time
    from modeling_maskformer.data.prepare import DATASETS
    config = json.loads(sys.argv[1])
    spec = DATASETS["ade20k"]
    archive = dataclasses.replace(spec.archives["all"], size=config["size"], sha256=config["sha256"])
    DATASETS["ade20k"] = dataclasses.replace(spec, archives={"all": archive}, split_counts=config["counts"])
    if config["slow_extraction"]:
        copy = shutil.copyfileobj
        def slow_copy(src, dst, length=0):
            print("extracting", flush=True)
            time.sleep(config["slow_extraction"])
            copy(src, dst, length)
        shutil.copyfileobj = slow_copy
    sys.argv = ["prepare_data.py", *sys.argv[2:]]
    runpy.run_path(config["script"], run_name="__main__")
""")


def start_prepare(*args: str, slow_extraction: float = 0.0) -> subprocess.Popen:
    archive = DATASETS["ade20k"].archives["all"]
    config = {
        "size": archive.size,
        "sha256": archive.sha256,
        "counts": ADE_COUNTS,
        "script": str(PREPARE),
        "slow_extraction": slow_extraction,
    }
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, json.dumps(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


# ----------------------------------------------------------------------------------------------------------
# One run per root; SIGTERM in a real process.
# ----------------------------------------------------------------------------------------------------------
def test_two_runs_at_once_then_sigterm_during_the_extraction(site, served_ade, tmp_path, monkeypatch, capsys):
    """A real prepare_data.py process (one, as it costs a torch import): while its download is held, a second run on
    the same root stops at once, naming it; then SIGTERM in the middle of its extraction ends it with status 143 and
    one line, its temporary folder removed and the verified archive kept; a plain rerun finishes from that archive."""
    root = tmp_path / "data"
    site.hold[ADE_URL_PATH] = threading.Event()  # the first run's download waits after its first byte
    first = start_prepare(*cli_args(site, root), slow_extraction=1.0)
    try:
        wait_for(lambda: site.requests or first.poll() is not None, "the first run's request")
        assert first.poll() is None, first.communicate()[1]
        line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, root))
        assert f"is being prepared by another process (pid {first.pid} on " in line and "prepare_data.py" in line
        assert str(root / ".maskformer-prepare.lock") in line and "wait for it to finish" in line
        assert len(site.requests) == 1  # the second run touched nothing

        site.hold[ADE_URL_PATH].set()
        assert first.stdout.readline() == "extracting\n", first.communicate()[1]
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    finally:
        site.hold[ADE_URL_PATH].set()
        first.kill()
    assert first.returncode == 143, err
    assert err.rstrip().splitlines()[-1] == (
        "prepare_data.py: interrupted by SIGTERM: ade20k: interrupted while extracting train, validation; its "
        f"temporary folder is removed and the verified archives stay in {root / 'downloads'}: run the same command "
        "again to finish"
    ), err
    assert leftovers(root) == [] and not (root / "ADEChallengeData2016").exists()
    assert (root / "downloads" / "ADEChallengeData2016.zip").is_file()
    # a plain rerun: the kept archive, no download
    assert prepare_ade(site, root).splits == ADE_COUNTS and len(site.requests) == 1
    assert prepare_ade(site, root).already_prepared and leftovers(root) == []


# ----------------------------------------------------------------------------------------------------------
# Resuming: no Content-Length, a short Content-Length, 416, a stale partial file, a file mirror.
# ----------------------------------------------------------------------------------------------------------
def test_a_connection_dropped_without_content_length_keeps_its_bytes(site, served_ade, tmp_path, monkeypatch, capsys):
    site.no_length.add(ADE_URL_PATH)
    site.always_drop[ADE_URL_PATH] = 1000
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path, "--retries", "0"))
    assert f"interrupted at 1,000 of {len(served_ade):,} bytes (the connection closed at byte 1,000" in line
    assert line.endswith("run the same command again to resume") and (tmp_path / PART).stat().st_size == 1000
    del site.always_drop[ADE_URL_PATH]
    site.drop_after[ADE_URL_PATH] = 3000  # the rerun is cut once more, and retries within the call
    site.requests.clear()
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS
    assert site.requests == [(ADE_URL_PATH, "bytes=1000-"), (ADE_URL_PATH, "bytes=4000-")]
    assert leftovers(tmp_path) == []


def test_a_short_content_length_keeps_the_valid_prefix_and_resumes(site, served_ade, tmp_path):
    site.short_length[ADE_URL_PATH] = 5000  # a 200 that says (and sends) 5,000 bytes, once
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS
    assert site.requests == [(ADE_URL_PATH, None), (ADE_URL_PATH, "bytes=5000-")]


def test_416_answers(site, served_ade, tmp_path, monkeypatch, capsys, caplog):
    part = tmp_path / PART
    part.parent.mkdir(parents=True)
    # a server that answers every Range request with a bare 416: from the start at once, not wedged (retries 0)
    site.refuse_range.add(ADE_URL_PATH)
    part.write_bytes(served_ade[:1000])
    assert prepare_ade(site, tmp_path, policy=DownloadPolicy(retries=0), keep_archives=True).splits == ADE_COUNTS
    assert site.requests == [(ADE_URL_PATH, "bytes=1000-"), (ADE_URL_PATH, None)]
    assert "answers 416 (Range Not Satisfiable) to a resume at byte 1,000; downloading from the start" in caplog.text

    # a partial file that is already whole: verified, no request
    site.requests.clear()
    root = tmp_path / "whole"
    (root / PART).parent.mkdir(parents=True)
    (root / PART).write_bytes(served_ade)
    assert prepare_ade(site, root).splits == ADE_COUNTS and site.requests == []

    # a server whose copy is shorter than the partial file: one line, the bytes kept, a rerun once it is fixed
    root = tmp_path / "short"
    (root / PART).parent.mkdir(parents=True)
    (root / PART).write_bytes(served_ade[:1000])
    site.refuse_range.clear()
    site.files[ADE_URL_PATH] = served_ade[:500]
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, root))
    assert f"answers 416 (Range Not Satisfiable): it has 500 bytes, the pinned archive {len(served_ade):,}" in line
    assert f"1,000 of {len(served_ade):,} bytes are kept in {root / PART}" in line and "check --mirror" in line
    assert (root / PART).read_bytes() == served_ade[:1000]
    site.files[ADE_URL_PATH] = served_ade
    site.requests.clear()
    assert prepare_ade(site, root).splits == ADE_COUNTS and site.requests == [(ADE_URL_PATH, "bytes=1000-")]


@pytest.mark.parametrize("validators", [True, False], ids=["etag", "no-validators"])
def test_a_stale_partial_file_restarts_once_and_says_so(site, served_ade, tmp_path, caplog, validators):
    """A partial file left by another copy of the archive: with its ETag stored, If-Range makes the server send the
    whole new file at once; without one, the checksum fails after the resume and the download restarts once."""
    part = tmp_path / PART
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)
    site.etags[ADE_URL_PATH] = '"new"'
    if validators:
        url = site.mirror + ADE_URL_PATH
        part.with_name(part.name + ".json").write_text(json.dumps({"url": url, "etag": '"old"'}))
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS
    if validators:
        assert site.requests == [(ADE_URL_PATH, "bytes=1000-")] and site.headers[0]["If-Range"] == '"old"'
        assert (
            'the file changed since the partial download (ETag "old" -> "new"); downloading from the start'
            in caplog.text
        )
    else:
        assert site.requests == [(ADE_URL_PATH, "bytes=1000-"), (ADE_URL_PATH, None)]
        assert "SHA-256 mismatch after resuming a partial download: the partial file was stale" in caplog.text
    assert leftovers(tmp_path) == []


def test_a_server_ignoring_if_range_does_not_splice_a_changed_file(site, served_ade, tmp_path, caplog):
    """Range honoured but If-Range ignored: the 206 carries the new ETag, so the stale partial file is discarded
    and the download starts again, before any byte of the new file is appended to it."""
    part = tmp_path / PART
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)
    site.etags[ADE_URL_PATH] = '"new"'
    site.ignore_if_range.add(ADE_URL_PATH)
    url = site.mirror + ADE_URL_PATH
    part.with_name(part.name + ".json").write_text(json.dumps({"url": url, "etag": '"old"'}))
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS
    assert site.requests == [(ADE_URL_PATH, "bytes=1000-"), (ADE_URL_PATH, None)]
    assert 'the file changed since the partial download (ETag "old" -> "new")' in caplog.text
    assert "SHA-256 mismatch" not in caplog.text and leftovers(tmp_path) == []


def test_a_file_mirror_is_copied_and_resumed(served_ade, tmp_path):
    mirror = tmp_path / "mirror dir"
    (mirror / ADE_URL_PATH.lstrip("/")).parent.mkdir(parents=True)
    (mirror / ADE_URL_PATH.lstrip("/")).write_bytes(served_ade)
    root = tmp_path / "data"
    (root / PART).parent.mkdir(parents=True)
    (root / PART).write_bytes(served_ade[:1000])
    result = prepare("ade20k", root, mirror=mirror.as_uri(), progress=False)
    assert result.splits == ADE_COUNTS and leftovers(root) == []


# ----------------------------------------------------------------------------------------------------------
# The low-speed limit.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interval", [0.5, 4.0], ids=["drip-under-the-limit", "silent-longer-than-the-window"])
def test_a_server_that_drips_bytes_is_cut_off_and_the_bytes_are_kept(
    site, served_ade, tmp_path, monkeypatch, capsys, interval
):
    """One byte every `interval` s against a limit of 100 bytes/s over 2 s: the attempt ends after about 2 s (the
    whole file would take hours), with every byte received in the partial file."""
    site.drip[ADE_URL_PATH] = interval
    start = time.monotonic()
    line = one_line_error(
        monkeypatch,
        capsys,
        PREPARE,
        *cli_args(site, tmp_path, "--retries", "0", "--low_speed_limit", "100", "--low_speed_time", "2"),
    )
    elapsed = time.monotonic() - start
    kept = (tmp_path / PART).stat().st_size
    assert elapsed < 30 and kept >= 1, (elapsed, kept)
    expected = "too slow: " if interval < 2 else "no data from 127.0.0.1 for 2 s"
    assert (
        expected in line and f"interrupted at {kept:,} of" in line and "run the same command again to resume" in line
    )
    assert (tmp_path / PART).read_bytes() == served_ade[:kept]
    del site.drip[ADE_URL_PATH]
    site.requests.clear()
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS and site.requests == [(ADE_URL_PATH, f"bytes={kept}-")]


# ----------------------------------------------------------------------------------------------------------
# Retries: transient answers with Retry-After, permanent ones at once.
# ----------------------------------------------------------------------------------------------------------
def test_429_and_503_with_retry_after(site, served_ade, tmp_path, monkeypatch, capsys, caplog):
    site.answers[ADE_URL_PATH] = [(429, {"Retry-After": "1"})]
    assert prepare_ade(site, tmp_path / "a").splits == ADE_COUNTS
    assert len(site.requests) == 2 and site.times[1] - site.times[0] >= 0.9
    assert "HTTP 429 Too Many Requests" in caplog.text and "retrying in 1 s (the server's Retry-After)" in caplog.text

    site.requests.clear()
    site.answers[ADE_URL_PATH] = [(503, {"Retry-After": "3600"})]
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path / "b"))
    assert "HTTP 503 Service Unavailable" in line and "asks to wait 3600 s (Retry-After)" in line
    assert line.endswith("run the same command again later") and len(site.requests) == 1

    site.requests.clear()
    site.answers[ADE_URL_PATH] = [(429, {"Retry-After": "0"})] * 2
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path / "b", "--retries", "1"))
    assert "cannot download ADEChallengeData2016.zip" in line and "HTTP 429 Too Many Requests" in line
    assert "2 attempt(s)" in line and line.endswith("run the same command again") and len(site.requests) == 2
    assert prepare_ade(site, tmp_path / "b").splits == ADE_COUNTS


def test_permanent_answers_fail_at_once_naming_the_redirect_target(site, served_ade, tmp_path, monkeypatch, capsys):
    moved = "/moved/ADEChallengeData2016.zip"
    site.redirects[ADE_URL_PATH] = moved
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path, "--retries", "3"))
    assert f"from {site.mirror}{moved}: HTTP 404 Not Found" in line and "check the URL / --mirror" in line
    assert site.requests == [(ADE_URL_PATH, None), (moved, None)]  # not retried
    site.answers[moved] = [(403, {})]
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path, "--retries", "3"))
    assert f"from {site.mirror}{moved}: HTTP 403 Forbidden" in line and "access refused" in line
    site.add(moved, served_ade)  # the redirect target is fixed: a rerun follows the redirect
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS


def test_gzip_encoding_is_named(site, served_ade, tmp_path, monkeypatch, capsys):
    site.gzip.add(ADE_URL_PATH)
    line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path))
    assert "sends the archive compressed (Content-Encoding: gzip)" in line and "unencoded" in line
    assert site.headers[0]["Accept-Encoding"] == "identity" and len(site.requests) == 1
    site.gzip.clear()
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_an_untrusted_certificate_fails_at_once_and_ssl_cert_file_fixes_it(served_ade, tmp_path, monkeypatch, capsys):
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with serve(wrap=lambda sock: context.wrap_socket(sock, server_side=True)) as site:
        site.add(DATASETS["ade20k"].archives["all"].url, served_ade)
        line = one_line_error(monkeypatch, capsys, PREPARE, *cli_args(site, tmp_path, "--retries", "3"))
        assert "untrusted TLS certificate at 127.0.0.1" in line and "SSL_CERT_FILE" in line
        assert site.connections == 1  # not retried
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert prepare_ade(site, tmp_path).splits == ADE_COUNTS


@pytest.mark.parametrize(
    "mirror, expected",
    [
        ("example.com/data", "--mirror: example.com/data: no scheme; use an http://, https:// or file:// URL"),
        ("ftp://example.com/data", "unsupported scheme 'ftp'"),
        ("http:///data", "no host name"),
        ("file:///no/such/mirror", "no such folder"),
        ("FOLDER", "no scheme; use an http://, https:// or file:// URL (for the folder"),
    ],
)
def test_a_bad_mirror_is_refused_before_anything_starts(
    site, served_ade, tmp_path, monkeypatch, capsys, mirror, expected
):
    root = tmp_path / "data"
    mirror = str(tmp_path) if mirror == "FOLDER" else mirror
    line = one_line_error(monkeypatch, capsys, PREPARE, "ade20k", "--root", str(root), "--mirror", mirror)
    assert expected in line and not root.exists() and site.requests == []
    monkeypatch.setenv("MASKFORMER_DATA_MIRROR", mirror)
    line = one_line_error(monkeypatch, capsys, PREPARE, "ade20k", "--root", str(root))
    assert line.startswith("prepare_data.py: error: $MASKFORMER_DATA_MIRROR: ")
    monkeypatch.delenv("MASKFORMER_DATA_MIRROR")
    assert run_script(PREPARE, *cli_args(site, root)).splits == ADE_COUNTS


# ----------------------------------------------------------------------------------------------------------
# Signals.
# ----------------------------------------------------------------------------------------------------------
# NOTE: the signals go to a process of their own: one sent to the test process reaches whatever handlers the native
# libraries loaded by earlier tests installed (it ended the whole one-thread suite with a segfault).
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_download_keeps_the_bytes(site, served_ade, tmp_path, signum):
    part = tmp_path / PART
    process = []

    def interrupt():  # the server, once the client has the first 1,000 bytes on disk
        wait_for(lambda: part.exists() and part.stat().st_size == 1000, "1,000 bytes on disk", 60)
        process[0].send_signal(signum)

    site.on_bytes[ADE_URL_PATH] = (1000, interrupt)
    site.hold[ADE_URL_PATH] = threading.Event()
    process.append(start_prepare(*cli_args(site, tmp_path)))
    try:
        _, err = process[0].communicate(timeout=180)
    finally:
        site.hold[ADE_URL_PATH].set()
        process[0].kill()
    by = " by SIGTERM" if signum == signal.SIGTERM else ""
    assert process[0].returncode == 128 + signum, err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == (
        f"prepare_data.py: interrupted{by}: ADEChallengeData2016.zip: download interrupted at 1,000 of "
        f"{len(served_ade):,} bytes, kept in {part}: run the same command again to resume"
    ), err
    assert part.read_bytes() == served_ade[:1000]
    site.hold.clear()
    site.requests.clear()
    assert prepare_ade(site, tmp_path).splits == ADE_COUNTS and site.requests == [(ADE_URL_PATH, "bytes=1000-")]


NESTED_HANDLERS = textwrap.dedent("""
    import os, signal, sys, time
    from modeling_maskformer.cli import run_cli
    sys.argv = ["tool.py"]
    before, seen = signal.getsignal(signal.SIGTERM), []

    def main():
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the nested handler, no exception
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    try:
        run_cli(main)
    except SystemExit as exit_info:
        assert exit_info.code == 143 and seen == [signal.SIGTERM], (exit_info.code, seen)
        assert signal.getsignal(signal.SIGTERM) is before
        print("OK")
""")


def test_sigterm_is_ctrl_c_for_every_cli_and_handlers_nest():
    """run_cli's SIGTERM handler is an ordinary one: code that installs its own (the training loop's checkpoint on
    SIGTERM) and puts it back leaves it working."""
    result = subprocess.run(
        [sys.executable, "-c", NESTED_HANDLERS],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.stdout == "OK\n", result.stderr
    assert result.stderr == "tool.py: interrupted by SIGTERM\n"


# ----------------------------------------------------------------------------------------------------------
# Logs, kept archives, --help.
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [(), ("--no_progress",)], ids=["default", "no_progress"])
def test_plain_progress_lines_when_stderr_is_not_a_terminal(
    site, served_ade, tmp_path, monkeypatch, capsys, caplog, flags
):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)  # a line per update instead of one per 30 s
    caplog.set_level(logging.INFO)
    root = tmp_path / "my data ä"
    run_script(PREPARE, "ade20k", "--root", str(root), "--mirror", site.mirror, *flags)
    out, err = capsys.readouterr()
    size = r"[\d.]+[kMG]?B"
    assert re.search(rf"ADEChallengeData2016\.zip: {size} of {size} \(100%\), {size}/s", caplog.text)
    assert re.search(rf"extracting ADEChallengeData2016\.zip: {size} of {size} \(100%\)", caplog.text)
    assert "\r" not in err and "\r" not in caplog.text
    assert f"use it with: --dataset {shlex.quote(str(root / 'ADEChallengeData2016'))} --label_convention ade" in out


def test_a_kept_archive_is_verified_before_it_is_trusted(site, served_ade, tmp_path, monkeypatch, caplog):
    assert prepare_ade(site, tmp_path, keep_archives=True).splits == ADE_COUNTS
    archive = tmp_path / "downloads" / "ADEChallengeData2016.zip"
    hashed = []
    real = download_module.sha256_of
    monkeypatch.setattr(download_module, "sha256_of", lambda path, **kw: hashed.append(path) or real(path, **kw))
    shutil.rmtree(tmp_path / "ADEChallengeData2016")
    assert prepare_ade(site, tmp_path, keep_archives=True).splits == ADE_COUNTS
    assert len(site.requests) == 1 and hashed == []  # verified when it was downloaded: the record says so

    data = bytearray(archive.read_bytes())  # the same size, one byte changed
    data[100] ^= 0xFF
    archive.write_bytes(bytes(data))
    shutil.rmtree(tmp_path / "ADEChallengeData2016")
    assert prepare_ade(site, tmp_path, keep_archives=True).splits == ADE_COUNTS
    assert hashed[0] == archive and len(site.requests) == 2 and archive.read_bytes() == served_ade
    assert "the pinned size but not the pinned SHA-256" in caplog.text
    assert (tmp_path / "ADEChallengeData2016" / MARKER).is_file()


def test_help_list_and_argument_errors_do_not_import_torch():
    """--help, --list and a mistyped option answer from the standard library alone (the package import costs
    seconds): --list reads the registry's file without the package's __init__."""
    outputs = {}
    for args, code in ((["--help"], 0), (["--list"], 0), (["ade20k", "--retries", "-1"], 2)):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", str(PREPARE), *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == code, done.stderr
        modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        assert not {m for m in modules if m.split(".")[0] in ("torch", "transformers", "modeling_maskformer")}
        outputs[args[0]] = done.stdout
    assert outputs["--list"] == registry_table() + "\n"  # the table the library makes, byte for byte
    outputs = {arg: " ".join(out.split()) for arg, out in outputs.items()}
    assert "--low_speed_limit" in outputs["--help"] and "docs/datasets-download.md" in outputs["--help"]
    names = re.search(r"the dataset: (\w+), (\w+) or (\w+)", outputs["--help"])
    # the help names the registry's datasets
    assert names is not None and list(names.groups()) == list(DATASETS)


def test_download_policy_is_checked():
    with pytest.raises(ValueError, match="low_speed_time must be > 0"):
        DownloadPolicy(low_speed_time=0)
    with pytest.raises(DataPreparationError, match="unsupported scheme 'ftp'"):
        download_module.download("ftp://host/x.zip", Path("x.zip"), size=None, sha256=None)
