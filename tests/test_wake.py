"""`WakeTimer`: one pending wake, at the soonest time asked for."""
import asyncio

from schedulers.wake import WakeTimer


def test_a_sooner_wake_replaces_a_later_one_and_a_later_one_waits_for_it():
    async def scenario():
        woken = asyncio.Event()
        calls = []
        timer = WakeTimer(lambda: (calls.append(1), woken.set()))
        timer.within(3600)  # would never come within the test
        timer.within(0.01)
        timer.within(3600)  # must not push the sooner wake back
        timer.within(None)
        await asyncio.wait_for(woken.wait(), 30)
        return calls

    assert asyncio.run(scenario()) == [1]


def test_after_a_wake_the_next_one_is_set_again():
    async def scenario():
        woken = asyncio.Event()
        timer = WakeTimer(woken.set)
        timer.within(0.0)
        await asyncio.wait_for(woken.wait(), 30)
        woken.clear()
        timer.within(0.0)
        await asyncio.wait_for(woken.wait(), 30)
        return True

    assert asyncio.run(scenario())
