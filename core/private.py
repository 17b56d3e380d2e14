"""Privacy helpers for what facelive prints and writes.

`redact` takes the credentials out of a source address before it is named anywhere (stream names,
events, folders, the live view, metric tags, logs, errors): camera URLs carry them as
`rtsp://user:password@host/...` or as query parameters (`?user=admin&pwd=...`).

`private_dir`, `open_private` and `write_private` make outputs that show faces or names (annotated
videos and images, batch JSON, cluster reports, event logs) readable by their owner only: files
0600 and folders 0700, also when the path already existed with a wider mode, because `os.open`'s
and `mkdir`'s modes apply only to what they create."""
from __future__ import annotations

import os
import re
from pathlib import Path

HIDDEN = "***"
# query parameters that carry a secret in camera and stream URLs (pwd, password, passwd, token,
# access_token, api_key, auth, signature, sig, credential, secret)
_SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred", re.IGNORECASE)


def split_address(address: str) -> tuple[str, str | None, str, str, str | None]:
    """(scheme, userinfo or None, host[:port], path, query or None) of a URL, split as FFmpeg and
    urllib split it: the authority ends at the first '/', '?' or '#', and the host follows its last
    '@' (so a password holding an unescaped '@' stays in the userinfo)."""
    scheme, _, rest = address.partition("://")
    rest = rest.partition("#")[0]
    end = min((i for i in (rest.find(c) for c in "/?") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    path, question, query = tail.partition("?")
    return scheme, userinfo if at else None, host, path, query if question else None


def redact(address: str) -> str:
    """`address` with its userinfo and secret query values replaced by ***; a file path or camera
    index (no '://') is returned as it is."""
    if "://" not in address:
        return address
    scheme, userinfo, host, path, query = split_address(address)
    shown = f"{scheme}://{HIDDEN + '@' if userinfo is not None else ''}{host}{path}"
    if query is not None:
        params = []
        for param in query.split("&"):
            key, equals, _ = param.partition("=")
            params.append(f"{key}={HIDDEN}" if equals and _SECRET_PARAM.search(key) else param)
        shown += "?" + "&".join(params)
    return shown


def private_dir(path: str | os.PathLike) -> Path:
    """`path` as a folder only its owner can enter; the folders this creates above it are 0700 too.
    PermissionError (saying what to do) if the folder is someone else's."""
    path = Path(path)
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except PermissionError as error:
        raise PermissionError(error.errno, f"{path} is not yours to make owner-only ({error.strerror}); "
                                           "write to a folder of your own") from None
    return path


def open_private(path: str | os.PathLike, mode: str = "wb"):
    """Open `path` for writing ('wb' or 'w'), emptied, mode 0600, in a private folder. A symlink
    at `path` is refused rather than followed: it would send the data wherever it points."""
    path = Path(path)
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    except BaseException:
        os.close(fd)
        raise


def write_private(path: str | os.PathLike, data: bytes | str) -> Path:
    with open_private(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
