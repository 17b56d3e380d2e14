"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) as an ONNX graph.

The .dat file is dlib's `serialize()` of the `anet_type` of dlib's dnn_face_recognition_ex.cpp. It
names no layer ids, tags or shapes beyond each layer's own parameters, so the architecture is
written out here (`ANET_LAYERS`) and the file is checked against it layer by layer: a different
network stops the conversion instead of producing a wrong graph.

The graph takes what `DlibEmbeddingBackend` takes, uint8 150x150 RGB chips (N, 150, 150, 3), and
applies `input_rgb_image_sized`'s (pixel - mean) / 256 itself, so its 128-D outputs are dlib's raw
descriptors (norm ~1.4) and dlib's distances and thresholds carry over unchanged."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CHIP = 150
OPSET = 17
IR_VERSION = 8  # pinned, with the opset, so the file (and its sha256) does not follow the onnx release


class DlibFormatError(ValueError):
    """The file is not the serialized network this converter knows."""


class _Reader:
    """dlib's serialize.h encodings: integers as a control byte (length in the low nibble, 0x80 for
    negative) plus little-endian magnitude bytes; bools as ASCII '0'/'1'; strings as a length and
    bytes; scalar floats as an int64 mantissa and int16 exponent; tensors as four dims and raw
    little-endian float32 (tensor.h, version 2)."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _need(self, size: int) -> None:
        if self.pos + size > len(self.data):
            raise DlibFormatError(f"the file ends at byte {len(self.data)}, inside a value at byte {self.pos}")

    def integer(self) -> int:
        self._need(1)
        control = self.data[self.pos]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise DlibFormatError(f"byte {self.pos}: {control:#04x} is not an integer's control byte")
        self._need(1 + size)
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if control & 0x80 else value

    def boolean(self) -> bool:
        byte = self.data[self.pos:self.pos + 1]
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"byte {self.pos}: {byte!r} is not a bool")
        self.pos += 1
        return byte == b"1"

    def string(self) -> str:
        size = self.integer()
        self._need(size)
        text = self.data[self.pos:self.pos + size].decode("ascii", "replace")
        self.pos += size
        return text

    def real(self) -> float:
        mantissa = self.integer()
        return float(np.ldexp(float(mantissa), self.integer()))

    def reals(self, count: int) -> list[float]:
        return [self.real() for _ in range(count)]

    def tensor(self) -> np.ndarray:
        self.expect_int(2, "tensor version")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        self._need(4 * count)
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values.astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        self.expect_int(1, "alias_tensor version")
        return tuple(self.integer() for _ in range(4))

    def expect_int(self, wanted: int, what: str) -> None:
        at, got = self.pos, self.integer()
        if got != wanted:
            raise DlibFormatError(f"byte {at}: {what} {got}, expected {wanted}")


@dataclass
class Layer:
    kind: str  # "con", "affine", "relu", "add_prev", "avg_pool", "max_pool", "fc"
    params: dict = field(default_factory=dict)


def _read_details(r: _Reader) -> Layer:
    name = r.string()
    if name in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(7))
        shape, _ = r.alias(), r.alias()
        r.reals(4)  # learning-rate and weight-decay multipliers
        use_bias = r.boolean() if name != "con_4" else True
        if name == "con_6":
            r.boolean()  # use_relu: a fused relu dlib applies only while training with cuDNN
        weights = params.reshape(-1)[:int(np.prod(shape))].reshape(shape)
        bias = params.reshape(-1)[int(np.prod(shape)):][:filters] if use_bias else np.zeros(filters, np.float32)
        return Layer("con", {"w": weights, "b": bias, "stride": (stride_y, stride_x), "pad": (pad_y, pad_x),
                             "kernel": (rows, cols)})
    if name in ("affine_", "affine_2"):
        params = r.tensor().reshape(-1)
        gamma, _ = r.alias(), r.alias()
        if r.integer() != 0 or gamma[0] != 1 or gamma[2:] != (1, 1):  # layer_mode CONV_MODE: one gamma and beta a channel
            raise DlibFormatError(f"an affine layer not in CONV_MODE (gamma {gamma})")
        if name == "affine_2" and r.boolean():
            raise DlibFormatError("a disabled affine layer")
        k = gamma[1]
        return Layer("affine", {"gamma": params[:k], "beta": params[k:2 * k]})
    if name in ("relu_", "relu_2"):
        if name == "relu_2" and r.boolean():
            raise DlibFormatError("a disabled relu layer")
        return Layer("relu")
    if name == "add_prev_":
        return Layer("add_prev")
    if name in ("avg_pool_2", "max_pool_2"):
        rows, cols, stride_y, stride_x, pad_y, pad_x = (r.integer() for _ in range(6))
        return Layer(name[:-2], {"kernel": (rows, cols), "stride": (stride_y, stride_x), "pad": (pad_y, pad_x)})
    if name in ("fc_2", "fc_3"):
        outputs, inputs = r.integer(), r.integer()
        params = r.tensor().reshape(-1)
        r.alias(), r.alias()
        has_bias = r.integer() == 0  # fc_bias_mode: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
        r.reals(4)
        if name == "fc_3":
            r.boolean()
        if has_bias:
            raise DlibFormatError("an fc layer with a bias (anet_type ends in fc_no_bias)")
        # dlib multiplies the flattened input (N, inputs) by this (inputs, outputs) matrix
        return Layer("fc", {"w": params[:inputs * outputs].reshape(inputs, outputs)})
    raise DlibFormatError(f"layer {name!r} is not one anet_type uses")


def _skip_layer_state(r: _Reader, version: int) -> None:
    """The training state add_layer writes after its details (setup flags, cached tensors)."""
    r.boolean(), r.boolean(), r.boolean()
    r.tensor(), r.tensor(), r.tensor()
    if version == 3:  # the add_layer over the input layer also stores its sample expansion factor
        r.integer()


def _ares(n: int, down: bool) -> list[str]:
    """Bottom-up layers of dlib's ares / ares_down (dnn_face_recognition_ex.cpp)."""
    block = ["tag", "con", "affine", "relu", "con", "affine"]
    return block + (["tag", "skip", "avg_pool", "add_prev", "relu"] if down else ["add_prev", "relu"])


# anet_type bottom-up: (filters, downsampling) per residual unit, then the layer kinds in file order
ANET_UNITS = ([(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2
              + [(256, True)] + [(256, False)] * 2 + [(256, True)])
ANET_LAYERS = (["con", "affine", "relu", "max_pool"] + [k for n, d in ANET_UNITS for k in _ares(n, d)]
               + ["avg_pool", "fc"])


@dataclass
class DlibNet:
    mean_rgb: tuple[float, float, float]
    layers: list[Layer]  # bottom-up, without tags and skips


def read_dlib_resnet(path: Path) -> DlibNet:
    """The layers of a serialized anet_type, checked against ANET_LAYERS."""
    r = _Reader(Path(path).read_bytes())
    r.expect_int(1, "add_loss_layer version")
    if r.string() not in ("loss_metric_", "loss_metric_2"):
        raise DlibFormatError("not a loss_metric network")
    r.reals(2)  # margin and distance threshold: training settings
    versions = []  # add_layer is version 2 (3 right over the input), tag and skip layers version 1
    while not versions or versions[-1] != 3:
        versions.append(r.integer())
    wrappers = ["tag" if k in ("tag", "skip") else "layer" for k in ANET_LAYERS]
    found = ["tag" if v == 1 else "layer" for v in reversed(versions)]
    if found != wrappers:
        raise DlibFormatError(f"the file nests {len(found)} layers in another order than anet_type's {len(wrappers)}")
    if r.string() != "input_rgb_image_sized":
        raise DlibFormatError("the input layer is not input_rgb_image_sized")
    mean = (r.real(), r.real(), r.real())
    if (r.integer(), r.integer()) != (CHIP, CHIP):
        raise DlibFormatError(f"the input is not {CHIP}x{CHIP}")
    layers = []
    for kind, version in zip(ANET_LAYERS, reversed(versions)):
        if kind in ("tag", "skip"):
            continue
        layer = _read_details(r)
        if layer.kind != kind:
            raise DlibFormatError(f"layer {len(layers)} is {layer.kind}, anet_type has {kind} there")
        _skip_layer_state(r, version)
        layers.append(layer)
    if r.pos != len(r.data):
        raise DlibFormatError(f"{len(r.data) - r.pos} bytes left after the network")
    return DlibNet(mean, layers)


class _Graph:
    """ONNX nodes and initializers with static (C, H, W) shapes tracked per tensor, so dlib's
    add_prev of differently sized tensors can be written as explicit zero padding."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.weights, self.shapes = [], [], {}
        self.count = 0

    def const(self, value: np.ndarray, hint: str) -> str:
        name = f"{hint}_{len(self.weights)}"
        self.weights.append(self.numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], shape: tuple[int, int, int] | None, **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    def conv(self, x: str, w: np.ndarray, b: np.ndarray, stride, pad) -> str:
        c, h, wd = self.shapes[x]
        (kh, kw), (sy, sx), (py, px) = w.shape[2:], stride, pad
        shape = (w.shape[0], (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1)
        return self.op("Conv", [x, self.const(w, "w"), self.const(b, "b")], shape,
                       kernel_shape=[kh, kw], strides=[sy, sx], pads=[py, px, py, px])

    def pool(self, op_type: str, x: str, kernel, stride, pad) -> str:
        c, h, w = self.shapes[x]
        shape = (c, (h + 2 * pad[0] - kernel[0]) // stride[0] + 1, (w + 2 * pad[1] - kernel[1]) // stride[1] + 1)
        return self.op(op_type, [x], shape, kernel_shape=list(kernel), strides=list(stride),
                       pads=[pad[0], pad[1], pad[0], pad[1]])

    def pad_to(self, x: str, shape: tuple[int, int, int]) -> str:
        missing = [want - have for want, have in zip(shape, self.shapes[x])]
        if not any(missing):
            return x
        pads = np.array([0, 0, 0, 0, 0, *missing], np.int64)  # zeros after the end of C, H and W
        return self.op("Pad", [x, self.const(pads, "pads")], shape)

    def add_prev(self, a: str, b: str) -> str:
        """dlib's add_prev: the output takes the larger size on each axis and each input counts as
        zero where it has no value (cpu_dlib.cpp `add`)."""
        shape = tuple(max(p, q) for p, q in zip(self.shapes[a], self.shapes[b]))
        return self.op("Add", [self.pad_to(a, shape), self.pad_to(b, shape)], shape)


def _folded(con: Layer, affine: Layer, input_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A con followed by its affine as one convolution: gamma * (W x + b) + beta. In float64, then
    rounded once, so the result does not depend on the order numpy happens to multiply in."""
    gamma = affine.params["gamma"].astype(np.float64)
    w = con.params["w"].astype(np.float64) * gamma[:, None, None, None] * input_scale
    b = con.params["b"].astype(np.float64) * gamma + affine.params["beta"].astype(np.float64)
    return w.astype(np.float32), b.astype(np.float32)


def to_onnx(net: DlibNet):
    """The ONNX ModelProto of a network `read_dlib_resnet` returned."""
    from onnx import TensorProto, checker, helper

    g = _Graph()
    layers = iter(net.layers)

    def take(kind: str) -> Layer:
        layer = next(layers)
        if layer.kind != kind:
            raise DlibFormatError(f"expected a {kind} layer, found {layer.kind}")
        return layer

    def con_affine(x: str, filters: int, input_scale: float = 1.0) -> str:
        con, affine = take("con"), take("affine")
        if len(con.params["w"]) != filters:
            raise DlibFormatError(f"a con layer with {len(con.params['w'])} filters where anet_type has {filters}")
        w, b = _folded(con, affine, input_scale)
        return g.conv(x, w, b, con.params["stride"], con.params["pad"])

    def relu(x: str) -> str:
        return g.op("Relu", [x], g.shapes[x])

    x = g.op("Cast", ["chips"], None, to=TensorProto.FLOAT)
    x = g.op("Sub", [x, g.const(np.array(net.mean_rgb, np.float32), "mean_rgb")], None)
    x = g.op("Transpose", [x], (3, CHIP, CHIP), perm=[0, 3, 1, 2])
    # input_rgb_image_sized divides by 256 after subtracting the mean: a power of two, so folding
    # it into the first convolution's weights rounds nothing differently
    x = con_affine(x, 32, 1 / 256)
    take("relu")
    x = g.pool("MaxPool", relu(x), **take("max_pool").params)
    for filters, down in ANET_UNITS:
        y = con_affine(x, filters)
        take("relu")
        y = con_affine(relu(y), filters)
        shortcut = g.pool("AveragePool", x, **take("avg_pool").params) if down else x
        take("add_prev")
        take("relu")
        x = relu(g.add_prev(y, shortcut))
    if take("avg_pool").params["kernel"] != (0, 0):  # avg_pool_everything: dlib's 0 means the whole input
        raise DlibFormatError("the last pooling layer is not avg_pool_everything")
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x], (g.shapes[x][0], 1, 1))], None, axis=1)
    fc = take("fc").params["w"]
    g.nodes.append(helper.make_node("MatMul", [x, g.const(fc, "fc_w")], ["embedding"], name="fc"))
    graph = helper.make_graph(
        g.nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("chips", TensorProto.UINT8, ["n", CHIP, CHIP, 3])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", fc.shape[1]])],
        g.weights)
    model = helper.make_model(graph, producer_name="facelive.models.dlib_onnx",
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    checker.check_model(model)
    return model


def dlib_resnet_to_onnx(source: Path, target: Path) -> Path:
    """Set-up recipe: the .dat file converted, written to `target` (deterministic bytes)."""
    target.write_bytes(to_onnx(read_dlib_resnet(source)).SerializeToString())
    return target
