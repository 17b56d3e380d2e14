"""launch/events.py: an events file written the way the event log writes it, printed as JSON lines."""
import json

import msgpack
import pytest

from core.events import frame_event, track_event
from launch.events import main

FACE = {"box": [1.0, 2.0, 30.0, 40.0], "score": 0.9, "landmarks": [[5.0, 6.0]] * 5, "age": 31.5,
        "gender": "female", "gender_score": 0.93, "expression": "happy",
        "expression_scores": {"happy": 0.8, "neutral": 0.2}, "identity": {"name": "ada", "distance": 0.31},
        "track_id": 1}
EVENTS = [
    track_event("track_start", "cam", 1, 0.08),
    frame_event("cam", 2, 0.08, [FACE]),
    frame_event("door", 0, 0.1, []),
    track_event("track_end", "cam", 1, 4.0, t_first=0.0, t_last_seen=3.9, hits=90, age=31.5, gender="female",
                gender_score=0.93, expression="happy", identity=None),
]


def write(path, events, tail: bytes = b""):
    # as EventLogActor writes them: one packed map after another
    path.write_bytes(b"".join(msgpack.packb(e, use_bin_type=True) for e in events) + tail)
    return path


def run(capsys, *argv) -> tuple[int, list[dict], str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, [json.loads(line) for line in out.splitlines()], err


def test_prints_every_event_as_one_json_line(tmp_path, capsys):
    status, printed, err = run(capsys, write(tmp_path / "events.msgpack", EVENTS))
    assert (status, err) == (0, "")
    assert printed == EVENTS


def test_filters_by_type_and_stream(tmp_path, capsys):
    path = write(tmp_path / "events.msgpack", EVENTS)
    assert run(capsys, path, "--type", "frame")[1] == [EVENTS[1], EVENTS[2]]
    assert run(capsys, path, "--type", "frame", "--stream", "door")[1] == [EVENTS[2]]
    assert run(capsys, path, "--type", "track_start", "--type", "track_end")[1] == [EVENTS[0], EVENTS[3]]
    assert run(capsys, path, "--stream", "nowhere") == (0, [], "")


def test_a_cut_off_file_prints_the_good_events_then_one_error(tmp_path, capsys):
    whole = write(tmp_path / "whole.msgpack", EVENTS).read_bytes()
    path = tmp_path / "cut.msgpack"
    path.write_bytes(whole[:-5])
    status, printed, err = run(capsys, path)
    assert printed == EVENTS[:-1]
    assert status == 1
    [line] = err.splitlines()
    assert str(path) in line


def test_a_corrupt_file_prints_the_good_events_then_one_error(tmp_path, capsys):
    path = write(tmp_path / "bad.msgpack", EVENTS[:2], tail=b"\xc1" + msgpack.packb(EVENTS[2]))
    status, printed, err = run(capsys, path)
    assert (status, printed) == (1, EVENTS[:2])
    [line] = err.splitlines()
    assert str(path) in line and "corrupt" in line


def test_a_file_of_something_else_is_refused(tmp_path, capsys):
    path = write(tmp_path / "other.msgpack", [EVENTS[0], {"hello": "world"}, EVENTS[1]])
    status, printed, err = run(capsys, path)
    assert (status, printed) == (1, EVENTS[:1])
    [line] = err.splitlines()
    assert str(path) in line and "not a facelive event" in line


def test_a_missing_file_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "absent.msgpack"
    status, printed, err = run(capsys, path)
    assert (status, printed) == (1, [])
    [line] = err.splitlines()
    assert str(path) in line


def test_help_and_bad_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "JSON lines" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        main([])
    assert done.value.code == 2
