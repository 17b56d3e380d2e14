"""Estimates that depend on resolution alone are noise: on the resolution series of every shared
portrait, test-time views keep age within 4 years, gender within 0.1 and the expression label the
same. obama.jpg's age moved most (11.8 years across 240-720 px before test-time views);
rose_leslie's expression moved while the expression chip kept detail finer than FER-2013's 48 px
faces (happy 0.46 against neutral 0.46 at 360 px, neutral 0.51-0.54 elsewhere)."""
import json

import pytest

from launch.evaluate import main
from tests import resolution_series


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    resolution_series.make(folder)
    return folder


def test_test_time_views_keep_estimates_steady_across_resolutions(series, tmp_path):
    assert main(["steadiness", str(series), "--out", str(tmp_path / "tta")]) == 0
    steady = {s["name"]: s for s in json.loads((tmp_path / "tta" / "steadiness.json").read_text())}
    assert sorted(steady) == sorted(resolution_series.PORTRAITS)
    for s in steady.values():
        assert s["versions"] == ["240", "360", "480", "720"]
        assert s["age_spread"] <= 4.0 and s["gender_spread"] <= 0.1 and s["same_expression"], s
    assert set(steady["obama"]["expressions"]) == {"happy"}
    # one crop a face: the same photo's age moves with its resolution far beyond the 4 years
    assert main(["steadiness", str(series), "--no-tta", "--out", str(tmp_path / "plain")]) == 1
    plain = {s["name"]: s for s in json.loads((tmp_path / "plain" / "steadiness.json").read_text())}
    assert plain["obama"]["age_spread"] > 2 * steady["obama"]["age_spread"]
