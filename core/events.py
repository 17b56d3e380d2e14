"""Events leaving the system (event log, web view, alarms): msgpack maps with `"v": 1` and a
`"type"`. The schema is documented in the README; `read_events` is its reader."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import msgpack

VERSION = 1


def frame_event(stream: str, seq: int, t_capture: float, faces: list[dict]) -> dict:
    return {"v": VERSION, "type": "frame", "stream": stream, "seq": seq, "t_capture": t_capture, "faces": faces}


def track_event(kind: str, stream: str, track_id: int, t: float, **extra) -> dict:
    return {"v": VERSION, "type": kind, "stream": stream, "track_id": track_id, "t": t, **extra}


class EventFormatError(ValueError):
    pass


def read_events(path: Path) -> Iterator[dict]:
    """Every event of a msgpack event file, in order; a cut-off last record ends the stream with
    EventFormatError naming the file."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            for event in unpacker:
                if not isinstance(event, dict) or "type" not in event or "v" not in event:
                    raise EventFormatError(f"{path}: not a facelive event: {str(event)[:80]}")
                yield event
        except (msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException, ValueError) as error:
            if isinstance(error, EventFormatError):
                raise
            raise EventFormatError(f"{path}: corrupt event file at byte {unpacker.tell()}: "
                                   f"{error or type(error).__name__}") from error
        # msgpack stops quietly at the end of the file even inside a record
        if unpacker.tell() != os.fstat(f.fileno()).st_size:
            raise EventFormatError(f"{path}: cut off after byte {unpacker.tell()} (the last event is incomplete)")
