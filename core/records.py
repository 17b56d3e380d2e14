"""The JSON records facelive writes for other tools to read. Their shapes are a contract: the
batch image record `facelive.image/1` is documented in the README."""
from __future__ import annotations

IMAGE_SCHEMA = "facelive.image/1"
SUMMARY_SCHEMA = "facelive.analyze-summary/1"


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


def face_record(box, score, landmarks, age, gender, gender_score, expression, expression_scores,
                identity, age_interval=None) -> dict:
    """One face as the batch record and the `frame` event carry it. `identity` is
    `{"name": .., "distance": ..}` or None; `age_interval` (low, high) years or None."""
    return {
        "box": [_r(v, 1) for v in box],
        "score": _r(score, 3),
        "landmarks": [[_r(x, 1), _r(y, 1)] for x, y in landmarks],
        "age": None if age is None else _r(age, 1),
        "gender": gender,
        "gender_score": None if gender_score is None else _r(gender_score, 3),
        "expression": expression,
        "expression_scores": {k: _r(v, 3) for k, v in (expression_scores or {}).items()},
        "identity": identity,
        "age_interval": None if age_interval is None else [_r(v, 1) for v in age_interval],
    }


def image_record(source: str, width: int, height: int, faces: list[dict]) -> dict:
    return {"schema": IMAGE_SCHEMA, "source": source, "width": width, "height": height, "faces": faces}
