"""`PoolClient` against stand-in pool actors: no Ray, the event loop only."""
import asyncio
import time

import numpy as np

from actors.pool_client import PoolClient
from core.config import PipelineConfig
from core.messages import PoolRoute, Recognised, RecognitionJob
from core.stats import TrafficCounter


class StandIn:
    """A pool actor's handle: each `run.remote(jobs)` call waits until the test answers it."""

    def __init__(self):
        self.calls: list[tuple[list, asyncio.Future]] = []
        self.run = self

    def remote(self, jobs):
        answer = asyncio.get_running_loop().create_future()
        self.calls.append((jobs, answer))
        return answer

    def answer(self, i: int = -1):
        jobs, future = self.calls[i]
        future.set_result([Recognised(job.task, job.track_ids) for job in jobs])


def job(seq: int, task: str = "expression") -> RecognitionJob:
    return RecognitionJob("cam", seq, task, np.zeros((1, 5, 2), np.float32), (seq,))


async def until(condition, deadline_s: float = 30.0):
    """Yield to the event loop until `condition()` holds (everything here runs on it)."""
    give_up = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0)


def test_jobs_queued_behind_a_busy_actor_go_in_one_batch():
    async def scenario():
        actor, traffic = StandIn(), TrafficCounter()
        client = PoolClient(PipelineConfig(mode="lossless"), traffic)
        await client.route((PoolRoute("expression-1", "expression", actor),))
        first = asyncio.create_task(client.run([job(0)]))
        await until(lambda: len(actor.calls) == 1)
        later = [asyncio.create_task(client.run([job(seq)])) for seq in (1, 2, 3)]
        await until(lambda: client.policy.queue_depth("expression") == 3)
        assert len(actor.calls) == 1  # one call in flight to an actor from here
        actor.answer(0)
        assert [r.track_ids for r in await first] == [(0,)]
        await until(lambda: len(actor.calls) == 2)
        assert [j.seq for j in actor.calls[1][0]] == [1, 2, 3]
        actor.answer(1)
        assert [(await t)[0].track_ids for t in later] == [(1,), (2,), (3,)]
        assert traffic.traffic().calls == {"expression.run": 2}
        assert [(c.task, c.jobs) for c in client.take_calls()] == [("expression", 1), ("expression", 3)]
        assert client.take_calls() == ()

    asyncio.run(scenario())


def test_a_task_without_actors_answers_none_and_a_routed_away_actor_finishes_first():
    async def scenario():
        old, new = StandIn(), StandIn()
        client = PoolClient(PipelineConfig(mode="lossless"), TrafficCounter())
        await client.route((PoolRoute("expression-1", "expression", old),))
        assert await client.run([job(0, "identity")]) == [None]
        running = asyncio.create_task(client.run([job(1)]))
        await until(lambda: len(old.calls) == 1)
        rerouted = asyncio.create_task(client.route((PoolRoute("expression-2", "expression", new),)))
        after = asyncio.create_task(client.run([job(2)]))
        await until(lambda: len(new.calls) == 1)  # new jobs go to the new actor meanwhile
        assert not rerouted.done()  # the old actor's call is still in flight
        old.answer()
        await asyncio.wait_for(rerouted, 30)
        new.answer()
        assert [(await t)[0].track_ids for t in (running, after)] == [(1,), (2,)]

    asyncio.run(scenario())


def test_jobs_of_a_task_swapped_in_place_wait_for_its_new_actor():
    """While a model is swapped in place its task has no actor: its jobs wait for the new one
    (lossless loses no result); another task without actors still answers None at once."""
    async def scenario():
        old, new = StandIn(), StandIn()
        client = PoolClient(PipelineConfig(mode="lossless"), TrafficCounter())
        await client.route((PoolRoute("expression-1", "expression", old),))
        await client.route((), waiting=frozenset({"expression"}))
        waiting = asyncio.create_task(client.run([job(0)]))
        assert await client.run([job(1, "identity")]) == [None]
        await until(lambda: client.policy.queue_depth("expression") == 1)
        await client.route((PoolRoute("expression-2", "expression", new),))
        await until(lambda: len(new.calls) == 1)
        new.answer()
        assert [r.track_ids for r in await waiting] == [(0,)]
        assert old.calls == []

    asyncio.run(scenario())
