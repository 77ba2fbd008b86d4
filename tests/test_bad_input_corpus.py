"""Bad-input corpus: every malformed or unsupported input gives one clear line and a non-zero exit.

Each case runs the real ``lowbit`` executable in a subprocess (so an uncaught exception shows up as a
traceback, exactly as a user would see it) and checks: non-zero exit status, exactly one line on
stderr (besides "[lowbit]" progress lines), no traceback, the expected words, and that no output file or folder was left behind.
Cases are added here as commands land; ``CASES`` is the corpus.
"""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOWBIT = [sys.executable, "-m", "lowbit.sw.cli"]


@dataclass
class Case:
    id: str
    argv: list
    expect: str                    # words the one-line message must contain
    setup: callable = None         # setup(tmp_path) writes input files
    env: dict = field(default_factory=dict)
    outputs: tuple = ()            # paths (relative to tmp_path) that must not exist afterwards
    needs_non_root: bool = False   # permission cases: root may write anywhere


def _write(name, content):
    def setup(tmp):
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return setup


def _float_model(tmp):
    from lowbit.sw.data.digits import digits_split, train_mlp
    xtr, ytr, _, _ = digits_split()
    train_mlp(xtr, ytr, epochs=1).save_npz(tmp / "m.npz")
    import numpy as np
    np.savez(tmp / "calib.npz", x=xtr[:50])
    np.savez(tmp / "test.npz", x=xtr[:5], y=ytr[:5])


def _lbm(tmp):
    _float_model(tmp)
    from lowbit.sw.quant.load import load_model
    import numpy as np
    load_model(tmp / "m.npz", np.load(tmp / "calib.npz")["x"]).save(tmp / "m.lbm")


def _fake_reweightable_build(tmp):
    """An ECP5 build folder whose placed design does not hold the ROM placeholders it claims."""
    import json
    from lowbit.sw.flow.build import fold_model
    from lowbit.sw.ir.model import Model
    from lowbit.sw.flow.synth import device
    _lbm(tmp)
    folding = fold_model(Model.load(tmp / "m.lbm"), device("ecp5-85f"))
    (tmp / "b" / "roms").mkdir(parents=True)
    (tmp / "b" / "model.lbm").write_bytes((tmp / "m.lbm").read_bytes())
    (tmp / "b" / "build.json").write_text(json.dumps({
        "board": "ulx3s-85f", "arch": "dataflow", "overlay": None, "arrays": [[f.rows, f.cols] for f in folding.layers], "clock_hz": 25e6,
        "baud": 1_000_000, "max_batch": 8, "reweightable": True, "rom_seed": 1, "family": "ecp5", "rom_block": 512,
        "timeout_bytes": 32, "mult": "lut", "requant_dsp": False, "pll": False, "divisor": 25}))
    (tmp / "b" / "top.random.config").write_text(".device LFE5U-85F\n.bram_init 0\n" + ("000 " * 7 + "000\n") * 256)


def _npz(name, **arrays):
    def setup(tmp):
        import numpy as np
        _float_model(tmp)
        np.savez(tmp / name, **arrays)
    return setup


def _spec_npz(spec, **arrays):
    def setup(tmp):
        import json
        import numpy as np
        _float_model(tmp)
        np.savez(tmp / "bad.npz", spec=np.array(json.dumps(spec)), **arrays)
    return setup


def _then(*setups):
    """Run several setups in order."""
    def setup(tmp):
        for step in setups:
            step(tmp)
    return setup


def _link(name, target):
    return lambda tmp: os.symlink(target, tmp / name)


def _read_only_dir(name):
    def setup(tmp):
        (tmp / name).mkdir()
        (tmp / name).chmod(0o555)
    return setup


def _fifo(name):
    return lambda tmp: os.mkfifo(tmp / name)


def _npy_as(name):
    """A single .npy array (64 features) saved under ``name``."""
    def setup(tmp):
        import numpy as np
        with open(tmp / name, "wb") as f:
            np.save(f, np.zeros((3, 64)))
    return setup


def _pickled(name, **members):
    def setup(tmp):
        import numpy as np
        np.savez(tmp / name, **{k: np.array([{"run": "code"}, None], dtype=object) if v is None else v
                                for k, v in members.items()})
    return setup


def _lbm_with(name, header=None, arrays=None, edit=None):
    """A copy of the test model m.lbm as ``name`` with ``model.json`` replaced by the text ``header``
    (or its dict changed by ``edit(h)``) and/or ``arrays.npz`` by the bytes ``arrays(tmp)`` returns."""
    def setup(tmp):
        import json
        import zipfile
        _lbm(tmp)
        with zipfile.ZipFile(tmp / "m.lbm") as z:
            h, a = z.read("model.json").decode(), z.read("arrays.npz")
        if edit:
            d = json.loads(h)
            edit(d)
            h = json.dumps(d)
        with zipfile.ZipFile(tmp / name, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("model.json", header if header is not None else h)
            if callable(arrays):
                arrays(tmp, z)
            else:
                z.writestr("arrays.npz", a)
    return setup


def _zeros_member(name, nbytes):
    """A deflated member of ``nbytes`` zeros: a few dozen KiB on disk (a zip bomb in miniature)."""
    def write(tmp, z):
        with z.open(name, "w", force_zip64=True) as f:
            for _ in range(nbytes >> 20):
                f.write(bytes(1 << 20))
    return write


def _arrays_member(build):
    """``arrays.npz`` whose bytes ``build()`` returns (an in-memory zip of .npy members)."""
    return lambda tmp, z: z.writestr("arrays.npz", build())


def _npz_declaring(shape):
    import io
    import zipfile
    import numpy as np
    buf, head = io.BytesIO(), io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<i8", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("0.weight.npy", head.getvalue() + bytes(64))
    return buf.getvalue()


def _npz_bomb():
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"{i}.weight.npy", bytes(30 << 20))
    return buf.getvalue()


def _npz_object():
    import io
    import numpy as np
    buf = io.BytesIO()
    np.savez(buf, **{"0.weight": np.array([{"run": "code"}], dtype=object)})
    return buf.getvalue()


def _onnx(name, dims=(1, 64), weight=None):
    """A one-Gemm float ONNX model with input ``dims`` and weight initializer ``weight`` (64 x 10 floats)."""
    def setup(tmp):
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
        w = numpy_helper.from_array(np.zeros((64, 10), np.float32) if weight is None else weight, name="W")
        graph = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w])
        onnx.save(helper.make_model(graph), tmp / name)
    return setup


def _damaged_build(text=None, edit=None):
    """The fake build folder ``b`` with its build.json replaced by ``text``, or its record changed by
    ``edit(record)``."""
    def setup(tmp):
        import json
        _fake_reweightable_build(tmp)
        record = json.loads((tmp / "b" / "build.json").read_text())
        if edit:
            edit(record)
        (tmp / "b" / "build.json").write_text(text if text is not None else json.dumps(record))
    return setup


import numpy as _np

_LONG = "n" * 250                  # with lowbit's temporary suffix, beyond ext4's 255-byte names

_DENSE = {"input_shape": [64], "layers": [{"type": "dense"}]}

CASES = [
    Case("unknown-subcommand", ["frobnicate"], "invalid choice: 'frobnicate'"),
    Case("no-subcommand", [], "the following arguments are required: COMMAND"),
    Case("doctor-bad-flag", ["doctor", "--fast"], "unrecognized arguments: --fast"),
    # model files
    Case("missing-model", ["eval", "nope.lbm", "--data", "test.npz"], "model file nope.lbm does not exist", _float_model),
    Case("truncated-lbm", ["eval", "t.lbm", "--data", "test.npz"], "not a readable lowbit model",
         lambda t: (_lbm(t), (t / "t.lbm").write_bytes((t / "m.lbm").read_bytes()[:300]))),
    Case("garbage-lbm", ["eval", "g.lbm", "--data", "test.npz"], "not a readable lowbit model",
         lambda t: (_float_model(t), (t / "g.lbm").write_bytes(b"\x00garbage" * 10))),
    Case("float-model-wrong-suffix", ["quantize", "m.onnx", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "model file m.onnx does not exist", _float_model, outputs=("o.lbm",)),
    Case("unsupported-float-format", ["quantize", "m.h5", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "cannot read a float model from m.h5", lambda t: (_float_model(t), (t / "m.h5").write_text("x")),
         outputs=("o.lbm",)),
    Case("truncated-float-npz", ["quantize", "cut.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "not a readable .npz file", lambda t: (_float_model(t), (t / "cut.npz").write_bytes((t / "m.npz").read_bytes()[:100])),
         outputs=("o.lbm",)),
    Case("float-npz-without-spec", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "has no 'spec' entry", _npz("bad.npz", w=_np.zeros(3)), outputs=("o.lbm",)),
    Case("unknown-layer-type", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "unsupported type 'lstm'", _spec_npz({"input_shape": [64], "layers": [{"type": "lstm"}]}), outputs=("o.lbm",)),
    Case("missing-weight-array", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "missing array '0.weight'", _spec_npz(_DENSE), outputs=("o.lbm",)),
    Case("nan-weights", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "NaN or infinite weights",
         _spec_npz(_DENSE, **{"0.weight": _np.full((64, 10), _np.nan), "0.bias": _np.zeros(10)}), outputs=("o.lbm",)),
    Case("weight-shape-mismatch", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "shape mismatch", _spec_npz(_DENSE, **{"0.weight": _np.zeros((63, 10)), "0.bias": _np.zeros(10)}),
         outputs=("o.lbm",)),
    Case("relu-first", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "ReLU must directly follow", _spec_npz({"input_shape": [64], "layers": [{"type": "relu"}, {"type": "dense"}]},
                                                **{"1.weight": _np.zeros((64, 10)), "1.bias": _np.zeros(10)}),
         outputs=("o.lbm",)),
    Case("batchnorm-first", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "BatchNorm must follow a Dense or Conv2d",
         _spec_npz({"input_shape": [64], "layers": [{"type": "batchnorm"}]},
                   **{f"0.{k}": _np.ones(64) for k in ("gamma", "beta", "mean", "var")}), outputs=("o.lbm",)),
    # quantization options
    Case("bits-too-many", ["quantize", "m.npz", "--calib-data", "calib.npz", "--weight-bits", "9", "-o", "o.lbm"],
         "weight bit-width 9 is not supported", _float_model, outputs=("o.lbm",)),
    Case("bits-zero", ["quantize", "m.npz", "--calib-data", "calib.npz", "--act-bits", "0", "-o", "o.lbm"],
         "activation bit-width 0 is not supported", _float_model, outputs=("o.lbm",)),
    Case("binary-mixed", ["quantize", "m.npz", "--calib-data", "calib.npz", "--weight-bits", "1", "-o", "o.lbm"],
         "use --weight-bits 1 --act-bits 1", _float_model, outputs=("o.lbm",)),
    Case("bits-not-a-number", ["quantize", "m.npz", "--calib-data", "calib.npz", "--weight-bits", "four", "-o", "o.lbm"],
         "invalid int value: 'four'", _float_model, outputs=("o.lbm",)),
    Case("bad-calibration-method", ["quantize", "m.npz", "--calib-data", "calib.npz", "--calib", "kl", "-o", "o.lbm"],
         "invalid choice: 'kl'", _float_model, outputs=("o.lbm",)),
    Case("missing-calib-option", ["quantize", "m.npz", "-o", "o.lbm"], "--calib-data", _float_model, outputs=("o.lbm",)),
    Case("output-not-lbm", ["quantize", "m.npz", "--calib-data", "calib.npz", "-o", "o.txt"], "should end in .lbm",
         _float_model, outputs=("o.txt",)),
    # data files
    Case("missing-data", ["eval", "m.lbm", "--data", "nope.npz"], "data file nope.npz does not exist", _lbm),
    Case("data-without-x", ["eval", "m.lbm", "--data", "d.npz"], "has no array 'x'", _npz("d.npz", inputs=_np.zeros((2, 64)))),
    Case("data-wrong-shape", ["eval", "m.lbm", "--data", "d.npz"], "the model expects (8, 8, 1)",
         lambda t: (_lbm(t), _np.savez(t / "d.npz", x=_np.zeros((3, 7))))),
    Case("data-nan", ["eval", "m.lbm", "--data", "d.npz"], "x contains NaN or infinity",
         lambda t: (_lbm(t), _np.savez(t / "d.npz", x=_np.full((3, 64), _np.nan)))),
    Case("labels-wrong-length", ["eval", "m.lbm", "--data", "d.npz"], "y must be 3 integer labels",
         lambda t: (_lbm(t), _np.savez(t / "d.npz", x=_np.zeros((3, 64)), y=_np.zeros(2, int)))),
    Case("labels-float", ["eval", "m.lbm", "--data", "d.npz"], "y must be 3 integer labels",
         lambda t: (_lbm(t), _np.savez(t / "d.npz", x=_np.zeros((3, 64)), y=_np.zeros(3)))),
    Case("empty-data", ["eval", "m.lbm", "--data", "d.npz"], "must be a non-empty numeric array",
         lambda t: (_lbm(t), _np.savez(t / "d.npz", x=_np.zeros((0, 64))))),
    Case("calib-nan", ["quantize", "m.npz", "--calib-data", "c.npz", "-o", "o.lbm"], "x contains NaN or infinity",
         lambda t: (_float_model(t), _np.savez(t / "c.npz", x=_np.full((3, 64), _np.inf))), outputs=("o.lbm",)),
    # boards and builds
    Case("unknown-board", ["build", "m.lbm", "--board", "icebreakr", "-o", "out"], "unknown board 'icebreakr'", _lbm,
         outputs=("out",)),
    Case("board-without-open-flow", ["build", "m.lbm", "--board", "arty-a7-35", "-o", "out"],
         "has no open Yosys/nextpnr flow", _lbm, outputs=("out",)),
    Case("pll-clock-out-of-range", ["build", "m.lbm", "--board", "icebreaker", "--clock-mhz", "500", "-o", "out"],
         "outside the ice40 PLL's 16-275 MHz range", _lbm, outputs=("out",)),
    Case("baud-too-fast", ["build", "m.lbm", "--board", "icebreaker", "--baud", "6000000", "-o", "out"],
         "needs at least 4 clocks per bit", _lbm, outputs=("out",)),
    Case("torch-without-shape", ["quantize", "m.pt", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "needs its input shape", lambda t: (_float_model(t), (t / "m.pt").write_bytes(b"x")), outputs=("o.lbm",)),
    Case("bad-input-shape", ["quantize", "m.pt", "--input-shape", "1,eight,8", "--calib-data", "calib.npz", "-o",
                             "o.lbm"], "is not a list of integers", _float_model, outputs=("o.lbm",)),
    Case("qonnx-missing-external-data", ["eval", "ext.onnx", "--data", "test.npz"],
         "external data file 'digits_mlp_w4a4_ext.onnx.data'", lambda t: (_float_model(t), (t / "ext.onnx").write_bytes(
             (Path(__file__).parent / "fixtures" / "brevitas" / "digits_mlp_w4a4_ext.onnx").read_bytes()))),
    Case("quantize-a-qonnx-model", ["quantize", str(Path(__file__).parent / "fixtures" / "brevitas" / "digits_bnn.onnx"),
                                    "--calib-data", "calib.npz", "-o", "o.lbm"],
         "is an already-quantized QONNX model", _float_model, outputs=("o.lbm",)),
    Case("reweight-not-a-build", ["reweight", ".", "m.lbm"], "is not a lowbit build folder", _lbm),
    Case("reweight-missing-model", ["reweight", ".", "nope.lbm"], "model file nope.lbm does not exist", _float_model),
    Case("reweight-foreign-placed-design", ["reweight", "b", "m.lbm"], "ROM contents not found in the bitstream",
         lambda t: _fake_reweightable_build(t), outputs=("b/top.bit",)),
    Case("run-not-a-build", ["run", ".", "--sim", "--data", "test.npz"], "is not a lowbit build folder", _float_model),
    Case("run-needs-target", ["run", ".", "--data", "test.npz"], "one of the arguments --port --sim is required",
         _float_model),
    # output paths: refused before any work, nothing created
    Case("output-parent-is-a-file", ["quantize", "m.npz", "--calib-data", "calib.npz", "-o", "calib.npz/o.lbm"],
         "calib.npz is a file, not a folder", _float_model),
    Case("output-dangling-link", ["quantize", "m.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "is a symbolic link to gone.lbm, which does not exist", _then(_float_model, _link("o.lbm", "gone.lbm"))),
    Case("output-name-too-long", ["quantize", "m.npz", "--calib-data", "calib.npz", "-o", _LONG + ".lbm"],
         "lowbit needs 18 more for its temporary name", _float_model, outputs=(_LONG + ".lbm",)),
    Case("output-read-only-parent", ["quantize", "m.npz", "--calib-data", "calib.npz", "-o", "ro/o.lbm"],
         "no permission to create files in ro", _then(_float_model, _read_only_dir("ro")), outputs=("ro/o.lbm",),
         needs_non_root=True),
    Case("build-output-parent-is-a-file", ["build", "m.lbm", "--board", "icebreaker", "-o", "m.lbm/out"],
         "m.lbm is a file, not a folder", _lbm),
    Case("build-output-symlink-loop", ["build", "m.lbm", "--board", "icebreaker", "-o", "out"],
         "symbolic link that loops back on itself", _then(_lbm, _link("out", "out"))),
    Case("build-output-in-dangling-folder", ["build", "m.lbm", "--board", "icebreaker", "-o", "gone/out"],
         "output folder gone is a symbolic link to nowhere", _then(_lbm, _link("gone", "nowhere")),
         outputs=("nowhere",)),
    Case("build-output-path-too-long", ["build", "m.lbm", "--board", "icebreaker", "-o", "d/" * 2100 + "out"],
         "too long for the file system", _lbm, outputs=("d",)),
    Case("build-output-is-dot", ["build", "m.lbm", "--board", "icebreaker", "-o", "."], "names no folder", _lbm),
    Case("plan-into-not-a-build", ["plan", "m.lbm", "--board", "icebreaker", "--into", "nowhere"],
         "nowhere is not a lowbit build folder", _lbm),
    Case("plan-max-batch-zero", ["plan", "m.lbm", "--board", "icebreaker", "--max-batch", "0"],
         "--max-batch 0 is outside 1 to 64", _lbm),
    # input paths: what the path is, not "does not exist"; a FIFO is never opened
    Case("data-is-a-folder", ["eval", "m.lbm", "--data", "d.npz"], "data file d.npz is a folder, not a file",
         _then(_lbm, lambda t: (t / "d.npz").mkdir())),
    Case("data-is-a-fifo", ["eval", "m.lbm", "--data", "d.npz"], "is not a regular file (it is a FIFO)",
         _then(_lbm, _fifo("d.npz"))),
    Case("model-is-a-fifo", ["quantize", "f.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "model file f.npz is not a regular file (it is a FIFO)", _then(_float_model, _fifo("f.npz")),
         outputs=("o.lbm",)),
    Case("lbm-is-a-folder", ["build", "d.lbm", "--board", "icebreaker", "-o", "out"], "model file d.lbm is a folder",
         lambda t: (t / "d.lbm").mkdir(), outputs=("out",)),
    Case("data-name-too-long", ["eval", "m.lbm", "--data", _LONG * 2 + ".npz"], "too long for the file system", _lbm),
    Case("model-symlink-loop", ["eval", "loop.lbm", "--data", "test.npz"], "loops back on itself",
         _then(_float_model, _link("loop.lbm", "loop.lbm"))),
    Case("data-below-a-file", ["eval", "m.lbm", "--data", "m.lbm/d.npz"], "a part of the path is a file", _lbm),
    # .npy where an .npz archive belongs; pickled members
    Case("data-is-npy", ["eval", "m.lbm", "--data", "d.npy"], "d.npy is a single .npy array, not an .npz archive",
         _then(_lbm, _npy_as("d.npy"))),
    Case("data-npy-renamed-npz", ["eval", "m.lbm", "--data", "d.npz"], "is a single .npy array",
         _then(_lbm, _npy_as("d.npz"))),
    Case("calib-npy-renamed-npz", ["quantize", "m.npz", "--calib-data", "c.npz", "-o", "o.lbm"],
         "c.npz is a single .npy array", _then(_float_model, _npy_as("c.npz")), outputs=("o.lbm",)),
    Case("float-model-npy-renamed-npz", ["quantize", "f.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "f.npz is a single .npy array", _then(_float_model, _npy_as("f.npz")), outputs=("o.lbm",)),
    Case("data-pickled-x", ["eval", "m.lbm", "--data", "d.npz"], "lowbit does not load pickles",
         _then(_lbm, _pickled("d.npz", x=None))),
    Case("data-pickled-labels", ["eval", "m.lbm", "--data", "d.npz"], "array 'y' is a pickled object array",
         _then(_lbm, _pickled("d.npz", x=_np.zeros((2, 64)), y=None))),
    Case("float-model-pickled-member", ["quantize", "f.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "lowbit does not load pickles", _then(_float_model, _pickled("f.npz", spec=None)), outputs=("o.lbm",)),
    # .lbm headers of the wrong shape
    Case("lbm-header-is-a-list", ["eval", "h.lbm", "--data", "test.npz"], "model.json holds a list, not the lowbit",
         _lbm_with("h.lbm", header="[1, 2, 3]")),
    Case("lbm-header-is-null", ["build", "h.lbm", "--board", "icebreaker", "-o", "out"], "model.json holds null",
         _lbm_with("h.lbm", header="null"), outputs=("out",)),
    Case("lbm-header-is-a-number", ["eval", "h.lbm", "--data", "test.npz"], "model.json holds a number",
         _lbm_with("h.lbm", header="1e400")),
    Case("lbm-header-nested-deep", ["eval", "h.lbm", "--data", "test.npz"], "nested too deeply",
         _lbm_with("h.lbm", header="[" * 200_000 + "]" * 200_000)),
    Case("lbm-layers-is-text", ["eval", "h.lbm", "--data", "test.npz"], "'layers' must be a list, not a string",
         _lbm_with("h.lbm", edit=lambda h: h.update(layers="dense"))),
    Case("lbm-input-shape-negative", ["eval", "h.lbm", "--data", "test.npz"], "input_shape [-64] must be a list",
         _lbm_with("h.lbm", edit=lambda h: h.update(input_shape=[-64]))),
    Case("lbm-signed-is-text", ["eval", "h.lbm", "--data", "test.npz"], "input_q signed must be true or false",
         _lbm_with("h.lbm", edit=lambda h: h["input_q"].update(signed="no"))),
    # what an .lbm may declare is bounded before it is read
    Case("lbm-arrays-zip-bomb", ["eval", "h.lbm", "--data", "test.npz"], "more than the 64 MiB a lowbit model may hold",
         _lbm_with("h.lbm", arrays=_zeros_member("arrays.npz", 65 << 20))),
    Case("lbm-header-too-big", ["eval", "h.lbm", "--data", "test.npz"], "model.json declares 2097152 bytes",
         _lbm_with("h.lbm", header=" " * (2 << 20))),
    Case("lbm-array-declares-huge-shape", ["eval", "h.lbm", "--data", "test.npz"],
         "declares shape (1000000, 1000000), beyond the limits", _lbm_with("h.lbm", arrays=_arrays_member(
             lambda: _npz_declaring((10 ** 6, 10 ** 6))))),
    Case("lbm-inner-arrays-bomb", ["reweight", ".", "h.lbm"], "declares 94371840 bytes of arrays",
         _lbm_with("h.lbm", arrays=_arrays_member(_npz_bomb))),
    Case("lbm-object-array", ["eval", "h.lbm", "--data", "test.npz"], "lowbit does not load pickles",
         _lbm_with("h.lbm", arrays=_arrays_member(_npz_object))),
    # importers: input shapes and initializers
    Case("float-npz-negative-input-dim", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "input shape [-64] must be 1 to 3 positive integers", _spec_npz({"input_shape": [-64], "layers": []}),
         outputs=("o.lbm",)),
    Case("float-npz-zero-input-dim", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "input shape [8, 0, 1] must be", _spec_npz({"input_shape": [8, 0, 1], "layers": [{"type": "flatten"}]}),
         outputs=("o.lbm",)),
    Case("float-npz-huge-input", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "has more than 16777216 values per sample",
         _spec_npz({"input_shape": [100000, 100000, 3], "layers": [{"type": "flatten"}]}), outputs=("o.lbm",)),
    Case("float-npz-stride-zero", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "layer 0 (conv2d) stride [0, 1] must be two integers from 1",
         _spec_npz({"input_shape": [8, 8, 1], "layers": [{"type": "conv2d", "stride": [0, 1]}]},
                   **{"0.weight": _np.zeros((3, 3, 1, 4)), "0.bias": _np.zeros(4)}), outputs=("o.lbm",)),
    Case("float-npz-layer-not-object", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "layer 0 must be an object", _spec_npz({"input_shape": [64], "layers": ["dense"]}), outputs=("o.lbm",)),
    Case("onnx-string-initializer", ["quantize", "s.onnx", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "initializer 'W' holds strings, not numbers",
         _then(_float_model, _onnx("s.onnx", weight=_np.array(["w"] * 640, dtype=object).reshape(64, 10))),
         outputs=("o.lbm",)),
    Case("onnx-huge-input", ["quantize", "h.onnx", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "has more than 16777216 values per sample", _then(_float_model, _onnx("h.onnx", dims=(1, 3, 10 ** 5, 10 ** 5))),
         outputs=("o.lbm",)),
    Case("torch-zero-input-shape", ["quantize", "m.pt", "--input-shape", "0,8,8", "--calib-data", "calib.npz", "-o",
                                    "o.lbm"], "--input-shape: input shape (0, 8, 8) must be 1 to 3 positive integers",
         _then(_float_model, _write("m.pt", b"x")), outputs=("o.lbm",)),
    # numeric options: range-checked before the model is even read
    Case("build-baud-zero", ["build", "m.lbm", "--board", "icebreaker", "--baud", "0", "-o", "out"],
         "--baud 0 is outside 1 to 12000000", _lbm, outputs=("out",)),
    Case("build-baud-negative", ["build", "m.lbm", "--board", "icebreaker", "--baud", "-9600", "-o", "out"],
         "--baud -9600 is outside", _lbm, outputs=("out",)),
    Case("build-baud-absurd", ["build", "m.lbm", "--board", "ulx3s-85f", "--baud", "99000000", "-o", "out"],
         "--baud 99000000 is outside", _lbm, outputs=("out",)),
    Case("build-max-batch-zero", ["build", "m.lbm", "--board", "icebreaker", "--max-batch", "0", "-o", "out"],
         "--max-batch 0 is outside 1 to 64", _lbm, outputs=("out",)),
    Case("build-max-batch-negative", ["build", "m.lbm", "--board", "icebreaker", "--max-batch", "-2", "-o", "out"],
         "--max-batch -2 is outside 1 to 64", _lbm, outputs=("out",)),
    Case("build-max-batch-huge", ["build", "m.lbm", "--board", "icebreaker", "--max-batch", "100000", "-o", "out"],
         "--max-batch 100000 is outside 1 to 64", _lbm, outputs=("out",)),
    Case("build-clock-zero", ["build", "m.lbm", "--board", "icebreaker", "--clock-mhz", "0", "-o", "out"],
         "--clock-mhz 0 must be a positive frequency", _lbm, outputs=("out",)),
    Case("build-clock-nan", ["build", "m.lbm", "--board", "icebreaker", "--clock-mhz", "nan", "-o", "out"],
         "--clock-mhz nan must be a positive frequency", _lbm, outputs=("out",)),
    Case("build-seed-negative", ["build", "m.lbm", "--board", "icebreaker", "--seed", "-1", "-o", "out"],
         "--seed -1 is outside 0 to 2147483647", _lbm, outputs=("out",)),
    Case("run-batch-zero", ["run", "b", "--sim", "--data", "test.npz", "--batch", "0"], "--batch 0 must be at least 1",
         _fake_reweightable_build, outputs=("b/sim",)),
    Case("run-batch-negative", ["run", "b", "--sim", "--data", "test.npz", "--batch", "-1"],
         "--batch -1 must be at least 1", _fake_reweightable_build, outputs=("b/sim",)),
    Case("verilog-engine-k-zero", ["verilog", "--engine", "--k", "0", "-o", "e.v"], "--k 0 is outside 1 to 4096",
         outputs=("e.v",)),
    Case("verilog-engine-n-zero", ["verilog", "--engine", "--k", "8", "--n", "0", "-o", "e.v"],
         "--n 0 is outside 1 to 4096", outputs=("e.v",)),
    Case("verilog-engine-k-huge", ["verilog", "--engine", "--k", "10000000", "-o", "e.v"], "--k 10000000 is outside",
         outputs=("e.v",)),
    Case("bench-synth-only-no-match", ["bench", "--synth-only", "virtex"], "--synth-only 'virtex' matches no synthesis"),
    Case("bench-synth-only-empty", ["bench", "--synth-only", ""], "matches no synthesis row"),
    # build folders: build.json validated field by field before anything runs or is written
    Case("run-build-json-not-json", ["run", "b", "--sim", "--data", "test.npz"], "build.json is not JSON",
         _damaged_build(text="{board: icebreaker"), outputs=("b/sim",)),
    Case("run-build-json-empty", ["run", "b", "--sim", "--data", "test.npz"], "build.json is empty",
         _damaged_build(text=""), outputs=("b/sim",)),
    Case("run-build-json-list", ["run", "b", "--sim", "--data", "test.npz"], "build.json holds a list, not a build",
         _damaged_build(text="[1, 2]"), outputs=("b/sim",)),
    Case("run-build-clock-zero", ["run", "b", "--sim", "--data", "test.npz"],
         "field 'clock_hz' must be a clock from 100 kHz to 1 GHz, not 0", _damaged_build(edit=lambda r: r.update(clock_hz=0)),
         outputs=("b/sim",)),
    Case("run-build-max-batch-text", ["run", "b", "--sim", "--data", "test.npz"],
         "field 'max_batch' must be an integer from 1 to 64, not \"8\"",
         _damaged_build(edit=lambda r: r.update(max_batch="8")), outputs=("b/sim",)),
    Case("run-build-arrays-mismatch", ["run", "b", "--sim", "--data", "test.npz"],
         "field 'arrays' has 1 entries, the model has 2 compute layers",
         _damaged_build(edit=lambda r: r.update(arrays=r["arrays"][:1])), outputs=("b/sim",)),
    Case("reweight-build-json-not-json", ["reweight", "b", "m.lbm"], "build.json is not JSON",
         _damaged_build(text="\x00\xff"), outputs=("b/reweight", "b/top.bit")),
    Case("reweight-build-no-clock", ["reweight", "b", "m.lbm"], "build.json has no field 'clock_hz'",
         _damaged_build(edit=lambda r: r.pop("clock_hz")), outputs=("b/reweight", "b/top.bit")),
    Case("reweight-build-bad-family", ["reweight", "b", "m.lbm"], "a reweightable build needs family ice40 or ecp5 with",
         _damaged_build(edit=lambda r: r.update(family="gowin")), outputs=("b/reweight", "b/top.bit")),
    Case("reweight-build-no-placed-design", ["reweight", "b", "m.lbm"], "has no top.random.config",
         lambda t: (_fake_reweightable_build(t), (t / "b" / "top.random.config").unlink()),
         outputs=("b/reweight", "b/top.bit")),
    # calibration data whose range would make the quantization degenerate
    Case("calib-near-1e300", ["quantize", "m.npz", "--calib-data", "c.npz", "-o", "o.lbm"],
         "calibration inputs x range [0, 1e+300] is beyond", lambda t: (_float_model(t), _np.savez(
             t / "c.npz", x=_np.linspace(0, 1e300, 3 * 64).reshape(3, 64))), outputs=("o.lbm",)),
    Case("calib-hugely-negative", ["eval", "m.npz", "--calib-data", "c.npz", "--data", "test.npz"],
         "range [-1e+15, 0] is beyond", lambda t: (_float_model(t), _np.savez(
             t / "c.npz", x=_np.linspace(-1e15, 0, 3 * 64).reshape(3, 64)))),
    Case("calib-constant", ["quantize", "m.npz", "--calib-data", "c.npz", "-o", "o.lbm"],
         "calibration inputs x range [0.5, 0.5] is empty", lambda t: (_float_model(t), _np.savez(
             t / "c.npz", x=_np.full((4, 64), 0.5))), outputs=("o.lbm",)),
    Case("calib-layer-output-overflows", ["quantize", "bad.npz", "--calib-data", "calib.npz", "-o", "o.lbm"],
         "layer 0 (dense) outputs range", _spec_npz({"input_shape": [64], "layers": [{"type": "dense"},
                                                    {"type": "relu"}, {"type": "dense"}]},
                                                   **{"0.weight": _np.full((64, 8), 1e14), "0.bias": _np.zeros(8),
                                                      "2.weight": _np.ones((8, 10)), "2.bias": _np.zeros(10)}),
         outputs=("o.lbm",)),
    Case("verilog-output-folder-too-long", ["verilog", "-o", _LONG * 2 + "/x.v"], "too long for the file system"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_line(case, tmp_path):
    if case.needs_non_root and os.geteuid() == 0:
        pytest.skip("root may write into read-only folders")
    if case.setup:
        case.setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in case.argv]
    env = {**os.environ, **case.env}
    proc = subprocess.run(LOWBIT + argv, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    # Progress lines ("[lowbit] ...") may come first; the error itself is exactly one line.
    lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith("[lowbit] ")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("lowbit: error: ") and case.expect in lines[0], lines[0]
    for rel in case.outputs:
        assert not os.path.lexists(tmp_path / rel), f"{rel} was left behind"
    leftovers = [p.relative_to(tmp_path) for p in tmp_path.rglob(".*") if p.name.endswith(".partial")
                 or p.name.startswith(".reweight.")]
    assert leftovers == []


def test_corpus_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
