"""Damaged ``.lbm`` files through the CLI: one line on stderr, exit code 2, never a traceback.

The cases come from mutating the JSON header and the arrays of a real model (a fuzzing run of 3000
mutations found the stride, meta and zero-point ones, which used to escape as raw exceptions). Each case runs ``lowbit eval`` in-process.
"""

import io
import json
import zipfile

import numpy as np
import pytest

from lowbit.sw.data.digits import digits_split, train_cnn
from lowbit.sw.quant.posttrain import quantize_net



@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    xtr, ytr, xte, yte = digits_split()
    model = quantize_net(train_cnn(xtr, ytr, epochs=1), xtr[:100])
    model.save(tmp / "good.lbm")
    np.savez(tmp / "test.npz", x=xte[:8], y=yte[:8])
    return tmp


def _layer(h, kind):
    return next(l for l in h["layers"] if l["kind"] == kind)


def _edit(src, dst, header=None, arrays=None):
    with zipfile.ZipFile(src) as z:
        h = json.loads(z.read("model.json"))
        a = dict(np.load(io.BytesIO(z.read("arrays.npz"))))
    if header:
        header(h)
    if arrays:
        arrays(a)
    buf = io.BytesIO()
    np.savez(buf, **a)
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("model.json", json.dumps(h))
        z.writestr("arrays.npz", buf.getvalue())


CASES = [
    # (id, header edit, arrays edit, word expected in the message)
    ("version", lambda h: h.update(version=2), None, "version 2"),
    ("format", lambda h: h.update(format="other"), None, "not a lowbit model"),
    ("unknown-kind", lambda h: h["layers"][0].update(kind="lstm"), None, "lstm"),
    ("no-layers-key", lambda h: h.pop("layers"), None, "layers"),
    ("weight-too-wide", lambda h: _layer(h, "conv2d")["weight_q"].update(bits=1), None, "outside"),
    ("bits-nine", lambda h: _layer(h, "conv2d")["weight_q"].update(bits=9), None, "bit-width"),
    ("unknown-requant", lambda h: _layer(h, "conv2d")["requant"].update(type="lut"), None, "lut"),
    ("float-weights", None, lambda a: a.update({"0.weight": a["0.weight"] + 0.5}), "integers"),
    ("missing-array", None, lambda a: a.pop("0.bias"), "0.bias"),
    ("bias-shape", None, lambda a: a.update({"0.bias": a["0.bias"][:1]}), "bias"),
    ("input-shape", lambda h: h.update(input_shape=[7, 7, 1]), None, "expects"),
    pytest.param("stride-zero", lambda h: _layer(h, "conv2d").update(stride=[0, 0]), None, "stride"),
    # One line, though the wording is vague ("missing 'NoneType' object is not iterable", "not enough values").
    ("stride-null", lambda h: _layer(h, "conv2d").update(stride=None), None, "corrupt"),
    ("kernel-text", lambda h: _layer(h, "maxpool2d").update(kernel="x"), None, "maxpool2d"),
    pytest.param("meta-number", lambda h: h.update(meta=5), None, "meta"),
    pytest.param("zero-point-text", lambda h: _layer(h, "conv2d")["requant"].update(zero_point="x"), None,
                 "zero"),
]


@pytest.mark.parametrize("name,header,arrays,word", CASES)
def test_damaged_model_is_one_line_error(cli, files, name, header, arrays, word):
    bad = files / f"{name}.lbm"
    _edit(files / "good.lbm", bad, header, arrays)
    code, out, err = cli("eval", str(bad), "--data", str(files / "test.npz"))
    assert code == 2, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert word in err, err


def test_undamaged_copy_still_evaluates(cli, files):
    _edit(files / "good.lbm", files / "copy.lbm")
    code, out, err = cli("eval", str(files / "copy.lbm"), "--data", str(files / "test.npz"), "--json")
    assert code == 0 and json.loads(out)["n"] == 8
