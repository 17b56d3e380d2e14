"""Print a facelive events file (events.msgpack, written by launch/demo.py) as JSON lines: one
event per line, in file order, for jq, grep or a spreadsheet.

A cut-off or corrupt file prints every event before the damage, then one error line on stderr
naming the file. Exit status: 0 all good, 1 unreadable or damaged file, 2 bad usage."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.events import EventFormatError, read_events  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="launch/events.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("events", type=Path, help="an events.msgpack file")
    p.add_argument("--type", action="append", metavar="TYPE",
                   help="only events of this type: frame, track_start, track_end, alarm, enrol (repeatable)")
    p.add_argument("--stream", action="append", metavar="S", help="only events of this stream (repeatable)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        for event in read_events(args.events):
            if args.type and event["type"] not in args.type:
                continue
            if args.stream and event.get("stream") not in args.stream:
                continue
            print(json.dumps(event, ensure_ascii=False))
    except EventFormatError as error:
        sys.stdout.flush()
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader (e.g. `| head`) has seen enough; stop without Python's complaint at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:
        print(f"error: {args.events}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
