"""Makes the resolution series: each shared portrait downscaled to 240, 360, 480 and 720 px high.

An estimate that changes with resolution alone is noise, not information: `launch/evaluate.py
steadiness DIR` scores how much age, gender and expression move across one portrait's series.
`python tests/resolution_series.py DIR` writes DIR/<portrait>@<height>.png (lossless, so only the
resolution differs)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.media import load_image  # noqa: E402

MEDIA = Path(__file__).parent / "media"
HEIGHTS = (240, 360, 480, 720)
# every shared one-face portrait at least 720 px high (gallery/obama/img1.jpg is photos/obama2.jpg)
PORTRAITS = {
    "obama": "photos/obama.jpg",
    "obama2": "photos/obama2.jpg",
    "obama3": "photos/obama3.jpg",
    "biden": "photos/biden.jpg",
    "biden_gallery": "gallery/biden/img1.jpg",
    "alex_lacamoire": "gallery/alex_lacamoire/img1.jpg",
    "rose_leslie": "gallery/rose_leslie/img1.jpg",
    "rose_leslie2": "gallery/rose_leslie/img2.jpg",
}


def make(out_dir: Path, names=tuple(PORTRAITS)) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        rel = PORTRAITS[name]
        image = load_image(MEDIA / rel)
        for height in HEIGHTS:
            width = round(image.shape[1] * height / image.shape[0])
            small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            path = out_dir / f"{name}@{height}.png"
            cv2.imwrite(str(path), small[:, :, ::-1])
            written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    for path in make(parser.parse_args().out):
        print(path)
