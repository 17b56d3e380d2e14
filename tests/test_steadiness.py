"""Estimates that depend on resolution alone are noise: on the resolution series of obama.jpg (the
portrait whose age moved most, by 11.8 years across 240-720 px, before test-time views),
test-time views keep age within 4 years, gender within 0.1 and the expression label the same."""
import json

import pytest

from launch.evaluate import main
from tests import resolution_series


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    resolution_series.make(folder, names=("obama",))
    return folder


def test_test_time_views_keep_estimates_steady_across_resolutions(series, tmp_path):
    assert main(["steadiness", str(series), "--out", str(tmp_path / "tta")]) == 0
    [steady] = json.loads((tmp_path / "tta" / "steadiness.json").read_text())
    assert steady["versions"] == ["240", "360", "480", "720"]
    assert steady["age_spread"] <= 4.0 and steady["gender_spread"] <= 0.1 and steady["same_expression"]
    # one crop a face: the same photo's age moves with its resolution far beyond the 4 years
    assert main(["steadiness", str(series), "--no-tta", "--out", str(tmp_path / "plain")]) == 1
    [plain] = json.loads((tmp_path / "plain" / "steadiness.json").read_text())
    assert plain["age_spread"] > 2 * steady["age_spread"]
