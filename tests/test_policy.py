"""SchedulingPolicy and FrameLedger, driven directly: no Ray, milliseconds."""
import random

from schedulers.policy import Admission, FrameLedger, SchedulingPolicy, WorkItem, Worker

PRIORITIES = {"detection": 4, "expression": 3, "age_gender": 2, "identity": 1}


def item(task: str, stream: str, seq: int, t: float = 0.0) -> WorkItem:
    return WorkItem(task, stream, seq, t)


def policy(mode: str = "lossless", workers: dict[str, int] | None = None, **kwargs) -> SchedulingPolicy:
    p = SchedulingPolicy(dict(PRIORITIES), mode, **kwargs)
    for task, count in (workers or {}).items():
        for n in range(count):
            p.add_worker(Worker(f"{task}-{n}", task))
    return p


def seqs(dispatch) -> list[int]:
    return [w.seq for w in dispatch.items]


def drain_one_by_one(p: SchedulingPolicy) -> list[int]:
    """Seqs in the order a single worker receives them, finishing each batch before the next."""
    order = []
    while dispatches := p.next_dispatches():
        for d in dispatches:
            order += seqs(d)
            p.done(d.worker.worker_id)
    return order


# ---- priorities and order


def test_free_workers_serve_the_highest_priority_task_first():
    # workers registered lowest priority first, so dict order cannot be what sorts them
    p = policy(workers={"identity": 1, "age_gender": 1, "expression": 1, "detection": 1})
    for task in ("identity", "age_gender", "expression", "detection"):
        p.push(item(task, "cam", 0))
    assert [d.worker.task for d in p.next_dispatches()] == ["detection", "expression", "age_gender", "identity"]
    assert all(p.queue_depth(task) == 0 for task in PRIORITIES)


def test_a_busy_high_priority_pool_does_not_hold_back_lower_ones():
    p = policy(workers={"expression": 1, "identity": 1})
    p.push(item("expression", "cam", 0))
    [first] = p.next_dispatches()
    p.push(item("expression", "cam", 1))
    p.push(item("identity", "cam", 1))
    [second] = p.next_dispatches()
    assert (first.worker.task, second.worker.task) == ("expression", "identity")
    assert p.queue_depth("expression") == 1 and p.busy("expression") == 1
    p.done(first.worker.worker_id)
    [third] = p.next_dispatches()
    assert third.worker is first.worker and seqs(third) == [1]


def test_live_serves_the_newest_work_first():
    p = policy("live", {"expression": 1})
    for seq in range(5):
        p.push(item("expression", "cam", seq))
    assert drain_one_by_one(p) == [4, 3, 2, 1, 0]


def test_lossless_serves_work_in_arrival_order():
    p = policy("lossless", {"expression": 1})
    for seq in range(5):
        p.push(item("expression", "cam", seq))
    assert drain_one_by_one(p) == [0, 1, 2, 3, 4]


def test_batches_hold_up_to_batch_size_items():
    p = policy("lossless", {"expression": 3}, batch_sizes={"expression": 4})
    for seq in range(10):
        p.push(item("expression", "cam", seq))
    assert [seqs(d) for d in p.next_dispatches()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert p.busy("expression") == 3


def test_live_batches_take_the_newest_items():
    p = policy("live", {"expression": 1}, batch_sizes={"expression": 4})
    for seq in range(6):
        p.push(item("expression", "cam", seq))
    [d] = p.next_dispatches()
    assert seqs(d) == [5, 4, 3, 2]
    assert [w.seq for w in p.queues["expression"]] == [0, 1]


def test_one_detector_serves_cameras_in_step_in_turn():
    """Four live cameras whose frames land in the same order every period, one detection call at a
    time taking about a period: newest-first gave every call to the camera that lands last."""
    p = policy("live", {"detection": 1}, carry=True)
    served = {cam: [] for cam in ("a", "b", "c", "d")}
    for period in range(40):
        t = period * 0.04
        for k, cam in enumerate(served):
            p.admit(item("detection", cam, period, t + k * 0.001), open_frames=0)
        [d] = p.next_dispatches(t + 0.039)
        served[d.items[0].stream].append(d.items[0].seq)
        p.done(d.worker.worker_id)
    assert {cam: len(seqs_) for cam, seqs_ in served.items()} == {"a": 10, "b": 10, "c": 10, "d": 10}
    # each call still takes the newest frame of the camera it serves
    assert all(seqs_ == sorted(seqs_) and seqs_[-1] >= 36 for seqs_ in served.values())


def serve_in_step(p: SchedulingPolicy, cams: tuple[str, ...], periods: int, task: str = "detection") -> dict[str, list[int]]:
    """Cameras whose frames land in the same order every period, one call a period: the periods
    each camera was served in."""
    served = {cam: [] for cam in cams}
    for period in range(periods):
        t = period * 0.04
        for k, cam in enumerate(cams):
            p.admit(item(task, cam, period, t + k * 0.001), open_frames=0)
        [d] = p.next_dispatches(t + 0.039)
        served[d.items[0].stream].append(period)
        p.done(d.worker.worker_id)
    return served


def test_detection_goes_where_it_is_needed_and_empty_cameras_are_still_looked_at():
    """One camera with faces moving (need 2), three with nobody in view (0.35): the busy one gets
    most calls; each empty one is still detected at least every few periods, so a face walking in
    is found."""
    p = policy("live", {"detection": 1}, carry=True)
    p.needs.update({"a": 2.0, "b": 0.35, "c": 0.35, "d": 0.35})
    served = serve_in_step(p, ("a", "b", "c", "d"), 100)
    assert len(served["a"]) >= 50
    for cam in "bcd":
        assert len(served[cam]) >= 8
        assert max(b - a for a, b in zip(served[cam], served[cam][1:])) <= 12


def test_needs_weigh_only_detection():
    p = policy("live", {"expression": 1})
    p.needs.update({"a": 3.0, "b": 0.35})
    served = serve_in_step(p, ("a", "b"), 40, task="expression")
    assert (len(served["a"]), len(served["b"])) == (20, 20)


def test_a_batch_spans_streams_newest_of_each_first():
    p = policy("live", {"detection": 1}, batch_sizes={"detection": 4})
    for seq in range(3):
        for cam in ("a", "b"):
            p.push(item("detection", cam, seq))
    [d] = p.next_dispatches()
    assert [(w.stream, w.seq) for w in d.items] == [("a", 2), ("b", 2), ("a", 1), ("b", 1)]


def test_tasks_without_a_batch_size_go_one_at_a_time():
    p = policy("lossless", {"detection": 2})
    for seq in range(3):
        p.push(item("detection", "cam", seq))
    assert [seqs(d) for d in p.next_dispatches()] == [[0], [1]]


# ---- workers


def test_busy_workers_get_no_work_until_done():
    p = policy(workers={"expression": 1})
    p.push(item("expression", "cam", 0))
    [d] = p.next_dispatches()
    p.push(item("expression", "cam", 1))
    assert p.next_dispatches() == []
    p.done(d.worker.worker_id)
    assert [seqs(d) for d in p.next_dispatches()] == [[1]]


def test_retired_workers_get_no_work():
    p = policy(workers={"expression": 2})
    p.workers["expression-0"].retired = True
    for seq in range(3):
        p.push(item("expression", "cam", seq))
    assert [d.worker.worker_id for d in p.next_dispatches()] == ["expression-1"]
    p.done("expression-1")
    assert [d.worker.worker_id for d in p.next_dispatches()] == ["expression-1"]
    assert p.busy("expression") == 1 and p.queue_depth("expression") == 1


def test_a_removed_worker_gets_no_work_and_its_late_done_is_harmless():
    p = policy(workers={"expression": 1})
    p.push(item("expression", "cam", 0))
    [d] = p.next_dispatches()
    assert p.remove_worker(d.worker.worker_id) is d.worker
    p.done(d.worker.worker_id)
    p.push(item("expression", "cam", 1))
    assert p.next_dispatches() == [] and p.queue_depth("expression") == 1
    assert p.remove_worker(d.worker.worker_id) is None


# ---- admission


def test_admission_below_the_limit_queues_the_frame():
    for mode in ("live", "lossless"):
        p = policy(mode, max_in_flight=2)
        assert p.admit(item("detection", "cam", 0), open_frames=1) == Admission(True)
        assert p.queue_depth("detection") == 1


def test_live_admission_at_the_limit_drops_the_oldest_waiting_frame_of_that_stream():
    p = policy("live", max_in_flight=2)
    p.push(item("detection", "other", 0))
    p.push(item("detection", "cam", 0))
    p.push(item("detection", "other", 1))
    p.push(item("detection", "cam", 1))
    decision = p.admit(item("detection", "cam", 2), open_frames=2)
    assert decision == Admission(True, (item("detection", "cam", 0),))
    assert [(w.stream, w.seq) for w in p.queues["detection"]] == [
        ("other", 0), ("other", 1), ("cam", 1), ("cam", 2)]


def test_live_admission_at_the_limit_drops_the_new_frame_when_none_is_waiting():
    p = policy("live", {"detection": 2}, max_in_flight=2)
    p.push(item("detection", "cam", 0))
    p.push(item("detection", "cam", 1))
    p.next_dispatches()  # both frames are past detection now
    p.push(item("detection", "other", 0))
    new = item("detection", "cam", 2)
    assert p.admit(new, open_frames=2) == Admission(True, (new,))
    assert [(w.stream, w.seq) for w in p.queues["detection"]] == [("other", 0)]


def test_lossless_admission_at_the_limit_waits_until_a_frame_finishes():
    p = policy("lossless", {"detection": 1}, max_in_flight=2)
    ledger = FrameLedger()

    def offer(seq: int) -> Admission:
        ledger.capture("cam", seq)
        return p.admit(item("detection", "cam", seq), ledger.open_frames("cam") - 1)

    assert offer(0).accepted and offer(1).accepted
    refused = offer(2)
    assert refused == Admission(False)
    assert [w.seq for w in p.queues["detection"]] == [0, 1]
    assert ledger.dropped == {}

    [d] = p.next_dispatches()
    ledger.finish("cam", d.items[0].seq)
    assert p.admit(item("detection", "cam", 2), ledger.open_frames("cam") - 1) == Admission(True)
    assert [w.seq for w in p.queues["detection"]] == [1, 2]


def test_a_full_stream_does_not_hold_back_another():
    p = policy("lossless", max_in_flight=1)
    ledger = FrameLedger()
    for stream, seq in [("a", 0), ("a", 1), ("b", 0)]:
        ledger.capture(stream, seq)
    assert not p.admit(item("detection", "a", 1), ledger.open_frames("a") - 1).accepted
    assert p.admit(item("detection", "b", 0), ledger.open_frames("b") - 1).accepted


# ---- batch wait


def test_a_short_batch_waits_for_more_until_its_wait_is_over():
    p = policy("lossless", {"detection": 1}, batch_sizes={"detection": 4}, batch_waits={"detection": 0.05})
    p.push(item("detection", "a", 0, t=1.0))
    assert p.next_dispatches(now=1.01) == []
    assert abs(p.next_wake(1.01) - 0.04) < 1e-9
    p.push(item("detection", "b", 0, t=1.02))
    assert p.next_dispatches(now=1.03) == []
    [batch] = p.next_dispatches(now=1.06)  # the oldest waited its 50 ms: what is there goes
    assert [(w.stream, w.seq) for w in batch.items] == [("a", 0), ("b", 0)]
    assert p.next_wake(1.06) is None


def test_a_full_batch_goes_at_once():
    p = policy("lossless", {"detection": 1}, batch_sizes={"detection": 2}, batch_waits={"detection": 10.0})
    p.push(item("detection", "a", 0, t=1.0))
    p.push(item("detection", "b", 0, t=1.0))
    assert len(p.next_dispatches(now=1.0)[0].items) == 2


# ---- live carry


def test_live_carry_keeps_one_frame_waiting_and_carries_the_one_it_replaces():
    p = policy("live", max_in_flight=8, carry=True)
    assert p.admit(item("detection", "cam", 0), 0).carried == ()
    admission = p.admit(item("detection", "cam", 1), 1)
    assert [w.seq for w in admission.carried] == [0] and admission.dropped == ()
    assert [w.seq for w in p.queues["detection"]] == [1]
    # another stream's waiting frame is not touched
    assert p.admit(item("detection", "other", 0), 0).carried == ()
    assert [w.seq for w in p.admit(item("detection", "cam", 2), 2).carried] == [1]
    assert sorted((w.stream, w.seq) for w in p.queues["detection"]) == [("cam", 2), ("other", 0)]


def test_live_carry_still_drops_when_the_stream_has_too_many_frames_open():
    p = policy("live", max_in_flight=2, carry=True)
    p.admit(item("detection", "cam", 0), 0)
    admission = p.admit(item("detection", "cam", 1), 2)
    assert [w.seq for w in admission.carried] == [0]
    assert [w.seq for w in admission.dropped] == [1]  # nothing left waiting: the newcomer is stale


def test_lossless_never_carries():
    p = policy("lossless", max_in_flight=8, carry=True)
    p.admit(item("detection", "cam", 0), 0)
    assert p.admit(item("detection", "cam", 1), 1).carried == ()
    assert p.queue_depth("detection") == 2


# ---- expiry


def test_live_expiry_drops_only_items_older_than_max_age_of_that_task():
    p = policy("live")
    for seq, t in enumerate([0.0, 1.0, 1.5, 2.5]):
        p.push(item("expression", "cam", seq, t))
    p.push(item("identity", "cam", 0, 0.0))
    stale = p.expire(now=2.5, max_age_s=1.0, task="expression")
    assert [w.seq for w in stale] == [0, 1]
    # exactly max_age old is not yet stale
    assert [w.seq for w in p.queues["expression"]] == [2, 3]
    assert p.queue_depth("identity") == 1


def test_lossless_never_expires():
    p = policy("lossless")
    p.push(item("expression", "cam", 0, 0.0))
    assert p.expire(now=1e6, max_age_s=0.1, task="expression") == []
    assert p.queue_depth("expression") == 1


# ---- ledger


def test_a_frame_finished_twice_counts_once():
    ledger = FrameLedger()
    ledger.capture("cam", 0)
    assert ledger.finish("cam", 0)
    assert not ledger.finish("cam", 0)
    assert not ledger.finish("cam", 0, "stale")
    assert (ledger.captured, ledger.processed, ledger.dropped, ledger.open_frames()) == (1, 1, {}, 0)


def test_finishing_an_unknown_frame_counts_nothing():
    ledger = FrameLedger()
    ledger.capture("cam", 0)
    assert not ledger.finish("cam", 1, "stale")
    assert not ledger.finish("other", 0)
    assert (ledger.processed, sum(ledger.dropped.values()), ledger.open_frames()) == (0, 0, 1)


def test_ledger_counts_always_add_up_under_random_operations():
    reasons = ("stale", "decode_error", "actor_failure")
    streams = ("a", "b", "c")
    for run in range(200):
        rng = random.Random(run)
        ledger = FrameLedger()
        next_seq = dict.fromkeys(streams, 0)
        open_, closed = set(), set()
        processed, dropped = 0, {}
        for _ in range(rng.randint(0, 80)):
            op = rng.choice(("capture", "capture", "finish", "drop", "again", "unknown"))
            stream = rng.choice(streams)
            if op == "capture":
                frame = (stream, next_seq[stream])
                next_seq[stream] += 1
                ledger.capture(*frame)
                open_.add(frame)
            elif op in ("finish", "drop") and open_:
                frame = rng.choice(sorted(open_))
                reason = rng.choice(reasons) if op == "drop" else None
                assert ledger.finish(*frame, reason)
                open_.remove(frame)
                closed.add(frame)
                if reason is None:
                    processed += 1
                else:
                    dropped[reason] = dropped.get(reason, 0) + 1
            elif op == "again" and closed:
                assert not ledger.finish(*rng.choice(sorted(closed)), rng.choice((None, *reasons)))
            elif op == "unknown":
                assert not ledger.finish(stream, next_seq[stream] + rng.randint(0, 5), rng.choice(reasons))
            assert ledger.captured == ledger.processed + sum(ledger.dropped.values()) + ledger.open_frames()
            assert (ledger.processed, dict(ledger.dropped), ledger.open_frames()) == (processed, dropped, len(open_))
            assert all(ledger.open_frames(s) == sum(1 for f in open_ if f[0] == s) for s in streams)
