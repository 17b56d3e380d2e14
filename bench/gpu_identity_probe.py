"""GPU probe for facelive's identity network (dlib's ResNet converted to ONNX at set-up) for a lent
GPU machine that has torch but no onnxruntime-gpu (BENCHMARKS.md, "GPU"). Two steps:

  python -m bench.gpu_identity_probe prepare DIR   # here: chips + ONNX Runtime's CPU embeddings
  python -m bench.gpu_identity_probe run DIR       # there (with onnx2torch): CUDA against them

`run` prints the embeddings' agreement with the CPU's and faces/s by batch size, fp32 and fp16."""
import json
import sys
import time
from pathlib import Path

import numpy as np

CHIPS = 256


def prepare(folder: Path) -> None:
    import cv2
    import onnxruntime as ort

    from models.analyzer import FaceDetectionStage
    from models.detector import DetectorConfig
    from models.files import model_path
    from models.registry import DEFAULT_MODELS, ModelRegistry

    registry = ModelRegistry()
    entry = registry.get(DEFAULT_MODELS["identity"])
    stage = FaceDetectionStage(registry, [entry.crop], config=DetectorConfig(max_side=640))
    video = cv2.VideoCapture(str(Path(__file__).resolve().parent.parent / "tests/media/video/crossing_faces.mp4"))
    chips = []
    while len(chips) < CHIPS:
        ok, image = video.read()
        if not ok:
            break
        _, crops = stage(image[:, :, ::-1].copy())
        chips.extend(crops.chips[next(iter(crops.chips))] if crops.chips else [])
    chips = np.stack(chips[:CHIPS])
    session = ort.InferenceSession(str(model_path(entry)), providers=["CPUExecutionProvider"])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "identity_chips.npz", chips=chips,
                        ref=session.run(None, {session.get_inputs()[0].name: chips})[0])
    (folder / "identity.onnx").write_bytes(model_path(entry).read_bytes())


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _distance_change(got: np.ndarray, ref: np.ndarray, scale: float = 1.4) -> float:
    """The largest change of any pair's distance on dlib's scale."""
    pairs = [np.linalg.norm(_unit(v)[:, None] - _unit(v)[None], axis=2) for v in (got, ref)]
    return float(np.abs(pairs[0] - pairs[1]).max() * scale)


def run(folder: Path) -> None:
    import torch
    from onnx2torch import convert

    data = np.load(folder / "identity_chips.npz")
    chips, ref = data["chips"], data["ref"]
    out = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "faces": len(chips)}
    model = convert(folder / "identity.onnx").cuda().eval()
    with torch.inference_mode():
        for precision in ("fp32", "fp16"):
            with torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                got = model(torch.from_numpy(chips).cuda()).float().cpu().numpy()
                out[f"{precision}_max_abs_diff"] = float(np.abs(got - ref).max())
                out[f"{precision}_max_scaled_distance_change"] = _distance_change(got, ref)
                for batch in (1, 16, 64, 256):
                    x = torch.from_numpy(np.resize(chips, (batch, *chips.shape[1:]))).cuda()
                    for _ in range(3):  # the first calls pick kernels
                        model(x)
                    torch.cuda.synchronize()
                    start, n = time.perf_counter(), 0
                    while time.perf_counter() - start < 2.0:
                        model(x)
                        n += batch
                    torch.cuda.synchronize()
                    out[f"{precision}_batch{batch}_faces_per_s"] = round(n / (time.perf_counter() - start))
                # uint8 chips from host memory to embeddings back in host memory
                start = time.perf_counter()
                for _ in range(8):
                    model(torch.from_numpy(chips).cuda()).float().cpu().numpy()
                out[f"{precision}_host_to_host_faces_per_s"] = round(8 * len(chips) / (time.perf_counter() - start))
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    {"prepare": prepare, "run": run}[sys.argv[1]](Path(sys.argv[2]))
