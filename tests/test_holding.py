from core.holding import PixelHolding


def answer(holding: PixelHolding, *detected: bool) -> PixelHolding:
    for d in detected:
        holding.answered(d)
    return holding


def test_a_new_stream_puts_its_frames():
    assert not PixelHolding().holding


def test_a_stream_the_detector_keeps_up_with_never_holds():
    # one camera on this box: nearly every frame detected, an odd one carried
    holding = answer(PixelHolding(), *([True] * 9 + [False]) * 20)
    assert not holding.holding and holding.detected_share > 0.8


def test_a_stream_mostly_carried_holds_within_a_few_frames():
    holding = answer(PixelHolding(), *[False] * 9)
    assert holding.holding


def test_a_share_between_the_lines_keeps_what_it_did():
    # every second frame detected: 0.5 lies between hold_below and put_above
    held = answer(PixelHolding(), *[False] * 12, *[True, False] * 20)
    put = answer(PixelHolding(), *[True, False] * 20)
    assert held.holding and not put.holding


def test_holding_stops_once_most_frames_are_detected_again():
    holding = answer(PixelHolding(), *[False] * 12)
    assert holding.holding
    answer(holding, *[True] * 12)
    assert not holding.holding
