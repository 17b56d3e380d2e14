from core.budget import BudgetConfig, Job, JobReason, RecognitionBudget, Task, VisibleTrack

FPS = 25.0


def seen(track_id: int, area: float = 1600.0, converged: bool = False) -> VisibleTrack:
    return VisibleTrack(track_id, area, converged)


def tasks_by_track(jobs: tuple[Job, ...], task: Task) -> list[int]:
    return sorted(job.track_id for job in jobs if job.task is task)


def tasks_of(jobs: tuple[Job, ...], track_id: int) -> set[Task]:
    return {job.task for job in jobs if job.track_id == track_id}


def test_a_new_track_gets_every_task_at_once():
    jobs = RecognitionBudget().plan(0.0, [seen(1)])
    assert {(job.task, job.reason) for job in jobs} == {(task, JobReason.NEW) for task in Task}


def test_expression_runs_every_frame_when_capacity_allows():
    budget = RecognitionBudget()
    runs = [Task.EXPRESSION in tasks_of(budget.plan(f / FPS, [seen(1)]), 1) for f in range(50)]
    assert all(runs)


def test_age_gender_runs_until_converged_then_on_a_slow_refresh():
    budget = RecognitionBudget(BudgetConfig(age_gender_refresh_s=2.0))
    unconverged = [Task.AGE_GENDER in tasks_of(budget.plan(f / FPS, [seen(1)]), 1) for f in range(10)]
    assert all(unconverged)
    later = [f for f in range(10, 110)
             if Task.AGE_GENDER in tasks_of(budget.plan(f / FPS, [seen(1, converged=True)]), 1)]
    assert later == [59, 109]  # last run at frame 9, then every 2 s


def test_identity_runs_on_confirmation_on_growth_and_on_refresh():
    budget = RecognitionBudget(BudgetConfig(identity_refresh_s=5.0, identity_growth=1.5))
    reasons = {}
    for f in range(200):
        area = 1600.0 if f < 40 else 2600.0  # the face comes closer at frame 40
        for job in budget.plan(f / FPS, [seen(1, area)]):
            if job.task is Task.IDENTITY:
                reasons[f] = job.reason
    assert reasons == {0: JobReason.NEW, 40: JobReason.GREW, 165: JobReason.REFRESH}


def test_slight_growth_does_not_rerun_identity():
    budget = RecognitionBudget()
    budget.plan(0.0, [seen(1, 1600.0)])
    assert Task.IDENTITY not in tasks_of(budget.plan(0.04, [seen(1, 2000.0)]), 1)


def test_the_budget_never_starves_a_new_track():
    budget = RecognitionBudget()
    crowd = [seen(i) for i in range(1, 31)]
    one_each = {task: 1 for task in Task}
    for f in range(100):
        budget.plan(f / FPS, crowd, one_each)
    # everyone is overdue now; a newcomer still gets every task on its first frame
    jobs = budget.plan(100 / FPS, [*crowd, seen(99)], one_each)
    assert tasks_of(jobs, 99) == set(Task)


def test_a_flood_of_new_tracks_is_served_first_come_first_served():
    budget = RecognitionBudget()
    first_expression = {}
    tracks: list[VisibleTrack] = []
    for f in range(40):
        if f % 2 == 0:
            tracks.append(seen(100 + f))  # a new face every other frame, capacity one a frame
        for job in budget.plan(f / FPS, tracks, {Task.EXPRESSION: 1}):
            if job.task is Task.EXPRESSION:
                first_expression.setdefault(job.track_id, f)
    assert all(first_expression[t.track_id] - (t.track_id - 100) <= 1 for t in tracks)


def test_under_a_cap_every_track_takes_its_turn():
    budget = RecognitionBudget()
    tracks = [seen(i) for i in range(1, 11)]
    served: dict[int, list[int]] = {t.track_id: [] for t in tracks}
    for f in range(30):
        for job in budget.plan(f / FPS, tracks, {Task.EXPRESSION: 3}):
            if job.task is Task.EXPRESSION:
                served[job.track_id].append(f)
    for frames in served.values():
        gaps = [b - a for a, b in zip(frames, frames[1:])]
        assert frames[0] <= 3 and max(gaps) <= 4  # 10 tracks, 3 a frame


def test_identity_is_capped_per_frame_and_the_rest_follow_on_later_frames():
    budget = RecognitionBudget()
    first = tasks_by_track(budget.plan(0.0, [seen(1), seen(2), seen(3)]), Task.IDENTITY)
    second = tasks_by_track(budget.plan(0.04, [seen(1), seen(2), seen(3)]), Task.IDENTITY)
    third = tasks_by_track(budget.plan(0.08, [seen(1), seen(2), seen(3)]), Task.IDENTITY)
    assert first == [1] and second == [2] and third == [3]  # oldest track first, one a frame


def test_forgotten_tracks_start_from_scratch():
    budget = RecognitionBudget()
    budget.plan(0.0, [seen(1), seen(2)])
    budget.forget([1])
    # a forgotten id starts from scratch should it ever be seen again
    assert tasks_of(budget.plan(1.0, [seen(1)]), 1) == set(Task)


def expression_frames(budget: RecognitionBudget, tracks_from: dict[int, int], frames: int) -> list[list[int]]:
    """Per frame, the tracks given expression; `tracks_from`: track -> first frame it is seen."""
    return [tasks_by_track(budget.plan(f / FPS, [seen(t) for t, first in tracks_from.items() if f >= first]),
                           Task.EXPRESSION) for f in range(frames)]


def test_an_expression_interval_runs_every_second_frame():
    runs = expression_frames(RecognitionBudget(BudgetConfig(expression_interval_s=0.07)), {1: 0}, 20)
    assert [bool(r) for r in runs] == [f % 2 == 0 for f in range(20)]


def test_tracks_that_start_apart_come_into_step_and_share_calls():
    # without riding along, a track seen one frame later would take every other frame: a pool
    # call each frame for two faces
    runs = expression_frames(RecognitionBudget(BudgetConfig(expression_interval_s=0.07)), {1: 0, 2: 1}, 21)
    assert runs[0] == [1]
    # the new track is served on its first frame, and the first rides along with it
    assert runs[1:] == [[1, 2] if f % 2 else [] for f in range(1, 21)]


def test_the_live_default_interval_applies_in_live_mode_only():
    from core.config import LIVE_EXPRESSION_INTERVAL_S, PipelineConfig

    assert PipelineConfig(mode="live").stream_budget().expression_interval_s == LIVE_EXPRESSION_INTERVAL_S
    assert PipelineConfig(mode="lossless").stream_budget().expression_interval_s == 0.0
    chosen = PipelineConfig(mode="live", budget=BudgetConfig(expression_interval_s=0.0))
    assert chosen.stream_budget().expression_interval_s == 0.0
