"""Fetching one dataset archive for `prepare.py` over HTTP(S) (urllib3) or from a `file:` URL into `NAME.part`,
resuming with Range + If-Range, retrying transient failures under urllib3's `Retry`, and keeping only a file of the
pinned size and SHA-256 (docs/datasets-download.md). Every failure is one line saying what was kept."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import ssl
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3 import exceptions
from urllib3.util import Retry

from ..errors import InvalidInputError
from .progress import DataPreparationError, check_free_space, disk_full, progress_bar, read_json_or_empty, write_json

logger = logging.getLogger(__name__)

CHUNK = 1 << 16  # one read: whatever has arrived, written to disk at once (a stall or Ctrl-C keeps it)
# Answers worth another try: a timeout, rate limiting, a server or gateway error (not 501/505: never going to work).
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 507, 509, 520, 521, 522, 523, 524})
_ADVICE = {
    401: "the server wants a login: check --mirror",
    403: "access refused: check the URL / --mirror (or the proxy)",
    404: "the file is not there: check the URL / --mirror (a mirror must serve the official paths)",
    410: "the file is gone: check the URL / --mirror (a mirror must serve the official paths)",
}


@dataclass(frozen=True)
class DownloadPolicy:
    """How hard `download` tries: `retries` per call; a stall (under `low_speed_limit` bytes/s over `low_speed_time`
    s, curl's --speed-limit / --speed-time; 0: off) ends an attempt like a dropped connection."""

    retries: int = 5
    timeout: float = 60.0  # connecting, and waiting for a byte (shortened to low_speed_time when that is on)
    low_speed_limit: int = 1024
    low_speed_time: float = 60.0
    backoff_factor: float = 1.0
    backoff_max: float = 30.0
    max_retry_after: float = 600.0

    def __post_init__(self):
        for name, value in vars(self).items():
            strict = name in ("timeout", "low_speed_time")
            if not value > 0 if strict else value < 0:
                raise InvalidInputError(f"download policy: {name} must be {'>' if strict else '>='} 0, got {value}")

    def retry(self) -> Retry:
        return Retry(
            total=self.retries,
            status_forcelist=TRANSIENT_STATUSES,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
        )

    @property
    def read_timeout(self) -> float:
        return min(self.timeout, self.low_speed_time) if self.low_speed_limit else self.timeout


def sha256_of(path: Path, *, progress: bool = True) -> str:
    digest = hashlib.sha256()
    with (
        open(path, "rb") as file,
        progress_bar(total=path.stat().st_size, desc=f"checking {path.name}", bar=progress) as bar,
    ):
        while chunk := file.read(1 << 20):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def discard_partial(part: Path) -> None:
    part.unlink(missing_ok=True)
    _beside(part, ".json").unlink(missing_ok=True)


def remove_download(destination: Path) -> None:
    destination.unlink(missing_ok=True)
    _beside(destination, ".verified.json").unlink(missing_ok=True)


def verified_sha256(path: Path, *, progress: bool = True, known: str | None = None) -> str:
    """The SHA-256 of `path` (`known`: just checked), recorded beside it keyed by size and mtime for the next run."""
    status, record = path.stat(), read_json_or_empty(_beside(path, ".verified.json"))
    key = {"size": status.st_size, "mtime_ns": status.st_mtime_ns}
    if known is None and "sha256" in record and record == {**key, "sha256": record["sha256"]}:
        return record["sha256"]
    digest = known or sha256_of(path, progress=progress)
    write_json(_beside(path, ".verified.json"), {**key, "sha256": digest})
    return digest


def _of(size: int | None) -> str:
    return f" of {size:,}" if size else ""


def _kept(part: Path, size: int | None) -> str:
    got = part.stat().st_size if part.exists() else 0
    return f"; {got:,}{_of(size)} bytes are kept in {part}" if got else ""


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file"):
        why = f"unsupported scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise DataPreparationError(f"{url}: {why}; use an http://, https:// or file:// URL")
    if parts.scheme != "file" and not parts.hostname:
        raise DataPreparationError(f"{url}: no host name; use an http://, https:// or file:// URL")


def download(
    url: str,
    destination: Path,
    *,
    size: int | None,
    sha256: str | None,
    policy: DownloadPolicy | None = None,
    progress: bool = True,
) -> Path:
    """`url` into `destination`, verified, resuming `destination.part`; an existing `destination` is kept only if it
    matches. A checksum mismatch after a resume (a stale partial file) restarts from byte 0 once."""
    policy = policy or DownloadPolicy()
    check_url(url)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = _beside(destination, ".part")
    try:
        if _trusted(destination, size=size, sha256=sha256, progress=progress):
            return destination
        source = _fetch_verified(url, part, size=size, sha256=sha256, policy=policy, progress=progress)
    except KeyboardInterrupt as interrupt:
        got = part.stat().st_size if part.exists() else 0
        message = (
            f"download interrupted at {got:,}{_of(size)} bytes, kept in {part}: run the same command again to resume"
            if got
            else "interrupted before any byte was downloaded: run the same command again"
        )
        raise type(interrupt)(f"{destination.name}: {message}") from interrupt
    os.replace(part, destination)
    _beside(part, ".json").unlink(missing_ok=True)
    if sha256 is not None:
        verified_sha256(destination, known=sha256)
    logger.info("%s: %s bytes from %s, verified", destination.name, f"{destination.stat().st_size:,}", source)
    return destination


def _trusted(destination: Path, *, size: int | None, sha256: str | None, progress: bool) -> bool:
    """Whether a finished download in place is the pinned archive; one that is not is removed."""
    if not destination.is_file():
        return False
    if size is not None and (found := destination.stat().st_size) != size:
        why = f"{found:,} bytes, not the pinned {size:,}"
    elif sha256 is None or verified_sha256(destination, progress=progress) == sha256:
        return True
    else:
        why = f"the pinned size but not the pinned SHA-256 ({sha256})"
    logger.warning("%s: %s: downloading it again", destination, why)
    remove_download(destination)
    return False


def _fetch_verified(url: str, part: Path, *, size, sha256, policy: DownloadPolicy, progress: bool) -> str:
    """Complete `part` and check its SHA-256; returns where the bytes came from (after redirects)."""
    name = part.name.removesuffix(".part")
    for restarted in (False, True):  # NOTE: the loop always returns or raises
        transfer = _Transfer(url, part, size=size, policy=policy, progress=progress)
        transfer.run()
        if sha256 is None:
            logger.warning("%s: no pinned SHA-256, only its size was checked", name)
            return transfer.source
        actual = sha256_of(part, progress=progress)
        if actual == sha256:
            return transfer.source
        discard_partial(part)
        if not transfer.resumed or restarted:
            raise DataPreparationError(
                f"{name}: SHA-256 mismatch (expected {sha256}, got {actual}) for the file from {transfer.source}: "
                f"not the pinned archive, so it was removed; check the URL / --mirror and run the same command again"
            )
        logger.warning(
            f"{name}: SHA-256 mismatch after resuming a partial download: the partial file was stale (from another "
            "copy of the archive); downloading it again from the start"
        )


class _Failed(Exception):
    """One failed attempt: the reason, whether another may help, the answer (for Retry-After), advice."""

    def __init__(self, reason: str, *, transient: bool, response=None, advice: str | None = None):
        super().__init__(reason)
        self.transient, self.response, self.advice = transient, response, f"; {advice}" if advice else ""


# urllib3's errors after the certificate check and the read timeout: (type, transient, advice); a bad URL and too many
# redirects are permanent, the rest (a refused or reset connection, a proxy) transient.
_CONNECTION_ERRORS = (
    (exceptions.ProxyError, True, "the proxy failed: check the proxy settings (https_proxy / http_proxy / no_proxy)"),
    ((exceptions.LocationValueError, exceptions.URLSchemeUnknown), False, "use an http:// or https:// URL"),
    (exceptions.ResponseError, False, "check the URL / --mirror"),
    (Exception, True, None),
)


def _connection_failure(error: Exception, url: str, read_timeout: float) -> _Failed:
    if isinstance(error, exceptions.MaxRetryError) and error.reason is not None:
        error = error.reason
    causes, host = [error, *error.args, error.__cause__, error.__context__], urlsplit(url).hostname
    if certificate := next((c for c in causes if isinstance(c, ssl.SSLCertVerificationError)), None):
        return _Failed(
            f"untrusted TLS certificate at {host} ({certificate.verify_message})",
            transient=False,
            advice="if a proxy or the mirror signs with its own certificate authority, "
            "point SSL_CERT_FILE at that CA bundle",
        )
    if isinstance(error, exceptions.ReadTimeoutError):
        return _Failed(f"no data from {host} for {read_timeout:.0f} s", transient=True)
    transient, advice = next((t, a) for kind, t, a in _CONNECTION_ERRORS if isinstance(error, kind))
    return _Failed(_short(getattr(error, "original_error", error)), transient=transient, advice=advice)


def _short(error: BaseException) -> str:
    """urllib3's message without its `HTTPConnection(host=..., port=...): ` prefix."""
    text = error.args[0] if error.args and isinstance(error.args[0], str) else str(error)
    return re.sub(r"^\w+\(host=[^)]*\):\s*", "", text) or type(error).__name__


class _Transfer:
    """Bring `part` up to the whole file at `url`, over as many attempts as the policy allows."""

    def __init__(self, url: str, part: Path, *, size: int | None, policy: DownloadPolicy, progress: bool):
        self.url, self.part, self.size, self.policy, self.progress = url, part, size, policy, progress
        self.source = url  # where the bytes came from last (the redirect target), for messages
        self.use_range = True
        self.resumed = self.offset > 0  # some bytes predate this call, or a resume
        self.name = part.name.removesuffix(".part")

    @property
    def offset(self) -> int:
        return self.part.stat().st_size if self.part.exists() else 0

    def run(self) -> None:
        retry = self.policy.retry()
        while True:
            if self.size is not None and self.offset > self.size:  # not a prefix of the pinned file
                discard_partial(self.part)
            if self.size is not None and self.offset == self.size:
                return
            try:
                return self._attempt()
            except _Failed as failure:
                if not failure.transient:
                    raise DataPreparationError(
                        f"{self.name} from {self.source}: {failure}{failure.advice}{_kept(self.part, self.size)}; "
                        f"run the same command again after that"
                    ) from None
                retry = self._wait(retry, failure)

    def _wait(self, retry: Retry, failure: _Failed) -> Retry:
        """Count the failure against the budget and wait (Retry-After, or the back-off), or give up."""
        name, got, tried = self.name, self.offset, f"({failure}; {len(retry.history) + 1} attempt(s)){failure.advice}"
        try:
            retry = retry.increment("GET", self.url, response=failure.response, error=None)
        except exceptions.MaxRetryError:
            if not got:
                raise DataPreparationError(
                    f"cannot download {name} from {self.source} {tried}; check the network, or try later or another "
                    "--mirror, and run the same command again"
                ) from None
            raise DataPreparationError(
                f"download of {name} from {self.source} interrupted at {got:,}{_of(self.size)} bytes {tried}"
                f"{_kept(self.part, self.size)}: run the same command again to resume"
            ) from None
        try:
            wait = retry.get_retry_after(failure.response) if failure.response is not None else None
        except exceptions.InvalidHeader:  # a Retry-After that is neither seconds nor a date: the back-off instead
            wait = None
        why, wait = ("back-off", retry.get_backoff_time()) if wait is None else ("the server's Retry-After", wait)
        if wait > self.policy.max_retry_after:
            raise DataPreparationError(
                f"{name} from {self.source}: {failure}, and the server asks to wait {wait:.0f} s (Retry-After), "
                f"more than {self.policy.max_retry_after:.0f} s{_kept(self.part, self.size)}: "
                f"run the same command again later"
            ) from None
        logger.warning(
            f"{name} from {self.source}: {failure}; retrying in {wait:.0f} s ({why}), at byte {got:,}, "
            f"retry {len(retry.history)} of {self.policy.retries}"
        )
        time.sleep(wait)
        return retry

    def _pool(self) -> urllib3.PoolManager:
        # NOTE: urllib3 leaves the proxy variables (http_proxy, https_proxy, no_proxy) alone; they are read as
        # urllib.request reads them.
        proxy = urllib.request.getproxies().get(urlsplit(self.url).scheme)
        if proxy and not urllib.request.proxy_bypass(urlsplit(self.url).hostname or ""):
            return urllib3.ProxyManager(proxy)
        return urllib3.PoolManager()

    def _attempt(self) -> None:
        offset, validators = self.offset, read_json_or_empty(_beside(self.part, ".json"))
        check_free_space(self.part.parent, (self.size - offset) if self.size is not None else 0)
        if urlsplit(self.url).scheme == "file":
            return self._copy_local(offset)
        headers = {"User-Agent": "modeling_maskformer-prepare-data", "Accept-Encoding": "identity"}
        if offset and self.use_range:
            headers["Range"] = f"bytes={offset}-"
            # NOTE: a weak ETag cannot be used in If-Range: the Last-Modified date then.
            etag = validators.get("etag")
            if_range = etag if etag and not etag.startswith("W/") else validators.get("last_modified")
            if validators.get("url") == self.url and if_range:
                headers["If-Range"] = if_range
        # Redirects only: every other failure comes back here and is retried (or not) by `run`.
        per_request = Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=10, respect_retry_after_header=False
        )
        timeout = urllib3.Timeout(connect=self.policy.timeout, read=self.policy.read_timeout)
        try:
            response = self._pool().request(
                "GET",
                self.url,
                headers=headers,
                retries=per_request,
                timeout=timeout,
                preload_content=False,
                decode_content=False,
            )
        except exceptions.HTTPError as error:
            raise _connection_failure(error, self.source, self.policy.read_timeout) from error
        try:
            self._answer(response, offset if "Range" in headers else 0, validators)
        finally:
            response.close()  # NOTE: not drained: an unread body (an error page, a refused encoding) is dropped

    def _answer(self, response, offset: int, stored: dict) -> None:
        redirects = [h for h in response.retries.history if h.redirect_location] if response.retries else []
        self.source = urljoin(redirects[-1].url, redirects[-1].redirect_location) if redirects else self.url
        status, size, name = response.status, self.size, self.name
        if status == 416:
            return self._not_satisfiable(response, offset)
        if status not in (200, 206):
            reason = f"HTTP {status} {response.reason or ''}".rstrip()
            retryable = self.policy.retry().is_retry("GET", status, "Retry-After" in response.headers)
            raise _Failed(reason, transient=retryable, response=response, advice=_ADVICE.get(status))
        headers = response.headers
        current = {"url": self.url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _Failed(
                f"the server sends the archive compressed (Content-Encoding: {encoding}) although it was "
                f"asked for the file as it is (Accept-Encoding: identity), so the bytes are not the archive's",
                transient=False,
                advice="configure the mirror to serve .zip files unencoded, or use another --mirror",
            )
        if status == 206:
            start, total = _content_range(headers.get("Content-Range", ""))
            if start != offset:
                raise _Failed(
                    f"unexpected Content-Range {headers.get('Content-Range')!r} for bytes={offset}-", transient=True
                )
            if total is not None and size is not None and total != size:
                raise _wrong_file(f"the server has a file of {total:,} bytes, the pinned {name} has {size:,}")
            # NOTE: a server that honours Range but ignores If-Range resumes a changed file: caught here, also for a
            # download without a pinned SHA-256.
            if changed := _changed(stored, current):
                discard_partial(self.part)
                raise _Failed(
                    f"the file changed since the partial download ({changed}); starting again", transient=True
                )
        else:
            length = headers.get("Content-Length")
            if length is not None and size is not None and int(length) > size:
                raise _wrong_file(f"the server has a file of {int(length):,} bytes, the pinned {name} has {size:,}")
            if offset:
                changed = _changed(stored, current)
                why = (
                    f"the file changed since the partial download ({changed})"
                    if changed
                    else "the server ignored Range"
                )
                logger.warning("%s: %s; downloading from the start", self.source, why)
            offset = 0
            self.use_range = True
            write_json(_beside(self.part, ".json"), current)
        self.resumed = self.resumed or offset > 0
        self._receive(response, offset)

    def _not_satisfiable(self, response, offset: int) -> None:
        """HTTP 416 to `Range: bytes=offset-`: the partial file is whole (verified next), the server's copy is shorter
        (kept; the server is at fault), or it cannot resume: the whole file then, outside the retry budget."""
        _, total = _content_range(response.headers.get("Content-Range", ""))
        if not offset:
            raise _Failed("HTTP 416 to a request without Range", transient=False, advice="check the URL / --mirror")
        if (total == offset and self.size in (None, total)) or (self.size is None and total is None):
            return  # whole; or nothing to compare with: the partial file is taken as complete, as the server says
        if total is not None and total < offset:
            pinned = f", the pinned archive {self.size:,}" if self.size else ""
            raise _Failed(
                f"the server answers 416 (Range Not Satisfiable): it has {total:,} bytes{pinned}: an "
                f"incomplete copy or another file",
                transient=False,
                advice="check --mirror",
            )
        logger.warning(
            f"{self.source} answers 416 (Range Not Satisfiable) to a resume at byte {offset:,}; downloading from the "
            "start"
        )
        self.use_range = False
        self._attempt()

    def _receive(self, response, offset: int) -> None:
        """Append the body to `part`, as it arrives; a stall under the low-speed limit ends the attempt."""
        limit, window, size, received = self.policy.low_speed_limit, self.policy.low_speed_time, self.size, 0
        with (
            open(self.part, "ab" if offset else "wb") as file,
            progress_bar(total=size, initial=offset, desc=self.name, bar=self.progress) as bar,
        ):
            window_start, window_bytes = time.monotonic(), 0
            while True:
                try:
                    chunk = response.read1(CHUNK)
                except exceptions.HTTPError as error:
                    raise _connection_failure(error, self.source, self.policy.read_timeout) from error
                if not chunk:
                    break
                if size is not None and offset + received + len(chunk) > size:
                    raise _wrong_file(f"the server sends more than the pinned {size:,} bytes")
                try:  # flushed: the bytes reach the file system as they arrive
                    file.write(chunk)
                    file.flush()
                except OSError as error:
                    if error.errno == errno.ENOSPC:
                        raise disk_full(self.part.parent) from error
                    raise
                received += len(chunk)
                window_bytes += len(chunk)
                bar.update(len(chunk))
                now = time.monotonic()
                if limit and now - window_start >= window:
                    if window_bytes < limit * (now - window_start):
                        raise _Failed(
                            f"too slow: {window_bytes:,} bytes in {now - window_start:.0f} s, under the "
                            f"low-speed limit of {limit:,} bytes/s",
                            transient=True,
                            advice="a slow but steady server can be allowed with --low_speed_limit 0",
                        )
                    window_start, window_bytes = now, 0
        if size is not None and offset + received < size:
            raise _Failed(f"the connection closed at byte {offset + received:,} of {size:,}", transient=True)

    def _copy_local(self, offset: int) -> None:
        """A `file:` URL: the file, after checking its size, read from `offset` like the body of a Range answer."""
        source = Path(urllib.request.url2pathname(urlsplit(self.url).path))
        if not source.is_file():
            raise DataPreparationError(
                f"{self.name}: no file {source} (from {self.url}); a mirror folder must hold the official paths: check "
                "--mirror and run the same command again"
            )
        found = source.stat().st_size
        if self.size is not None and found != self.size:
            raise DataPreparationError(
                f"{self.name}: {source} has {found:,} bytes, the pinned archive {self.size:,}: not the pinned archive; "
                "check --mirror and run the same command again"
            )
        offset = offset if offset <= found else 0
        with open(source, "rb") as file:
            file.seek(offset)
            self._receive(file, offset)


def _wrong_file(reason: str) -> _Failed:
    return _Failed(f"{reason}: not the pinned archive", transient=False, advice="check --mirror")


def _content_range(value: str) -> tuple[int | None, int | None]:
    """`bytes START-END/TOTAL` or `bytes */TOTAL` -> (START, TOTAL), None where absent or `*`."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value)
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _changed(stored: dict, current: dict) -> str | None:
    """How the server's file differs from the one the partial file came from (same URL, validators known)."""
    if stored.get("url") != current["url"]:
        return None
    for key, label in (("etag", "ETag"), ("last_modified", "Last-Modified")):
        if stored.get(key) and current.get(key):
            return f"{label} {stored[key]} -> {current[key]}" if stored[key] != current[key] else None
    return None
