"""Fuzzing what users hand lowbit: ``.lbm`` headers, build records and CLI option ranges.

Each property asserts "a clean LowbitError (exit code 2) or success, never another exception". The
runs are derandomized (a fixed seed, so CI sees the same examples every time) and call lowbit in-process
for speed; the whole file takes a few seconds.
"""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lowbit.sw.errors import LowbitError

FUZZ = settings(derandomize=True, max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Any JSON value, including the non-standard NaN/Infinity Python's json module reads and writes.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8)
    | st.sampled_from([0, 1, -1, 8, 9, 2 ** 31, [1, 1], [0, 0], [], {}, "dense", "conv2d", "fixed_point"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


class _Good(tuple):
    def __repr__(self):           # hypothesis prints the arguments of a failing example
        return "<good model>"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A real CNN model's ``model.json`` (as a dict) and ``arrays.npz`` bytes, and a work folder."""
    from lowbit.sw.digits import digits_split, train_cnn
    from lowbit.sw.posttrain import quantize_net
    tmp = tmp_path_factory.mktemp("fuzz")
    xtr, ytr, _, _ = digits_split()
    quantize_net(train_cnn(xtr, ytr, epochs=1), xtr[:100]).save(tmp / "good.lbm")
    with zipfile.ZipFile(tmp / "good.lbm") as z:
        return _Good((json.loads(z.read("model.json")), z.read("arrays.npz"), tmp))


def _paths(value, prefix=()):
    """Every key/index path into a JSON value (the value itself is the empty path)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _replace(value, path, new):
    if not path:
        return new
    value = json.loads(json.dumps(value))
    node = value
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return value


def _load_or_refuse(path):
    """Model.load, then (if it loaded) a forward pass: both must succeed or raise LowbitError."""
    from lowbit.sw.intref import predict
    from lowbit.sw.model import Model
    try:
        model = Model.load(path)
    except LowbitError as exc:
        assert "\n" not in str(exc)
        return False
    if int(np.prod(model.input_shape)) <= 4096:
        try:
            predict(model, np.zeros((2, *model.input_shape)))
        except LowbitError:
            pass
    return True


def _write_lbm(path, header_text, arrays_bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.json", header_text)
        z.writestr("arrays.npz", arrays_bytes)


@FUZZ
@given(data=st.data(), new=JSON)
def test_lbm_header_field_replaced_by_any_json(good, data, new):
    header, arrays, tmp = good
    path = data.draw(st.sampled_from(sorted(_paths(header), key=repr)), label="path")
    _write_lbm(tmp / "f.lbm", json.dumps(_replace(header, path, new)), arrays)
    _load_or_refuse(tmp / "f.lbm")


@FUZZ
@given(data=st.data(), key=st.text(max_size=12), new=JSON)
def test_lbm_header_gains_or_loses_keys(good, data, key, new):
    header, arrays, tmp = good
    paths = [p for p in _paths(header) if isinstance(_get(header, p), dict)]
    path = data.draw(st.sampled_from(sorted(paths, key=repr)), label="object")
    edited = json.loads(json.dumps(header))
    node = _get(edited, path)
    if key in node and data.draw(st.booleans(), label="delete"):
        del node[key]
    else:
        node[key] = new
    _write_lbm(tmp / "f.lbm", json.dumps(edited), arrays)
    _load_or_refuse(tmp / "f.lbm")


def _get(value, path):
    for key in path:
        value = value[key]
    return value


@FUZZ
@given(header=JSON | st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_lbm_header_is_any_text(good, header):
    _, arrays, tmp = good
    _write_lbm(tmp / "f.lbm", header if isinstance(header, str) else json.dumps(header), arrays)
    assert not _load_or_refuse(tmp / "f.lbm") or isinstance(header, dict)


@FUZZ
@given(data=st.data())
def test_lbm_arrays_of_any_shape_and_type(good, data):
    header, arrays, tmp = good
    members = dict(np.load(io.BytesIO(arrays)))
    name = data.draw(st.sampled_from(sorted(members)), label="array")
    dtype = data.draw(st.sampled_from(["<i8", "<i4", "|u1", "<f8", "|b1", "<c16", "<U3"]), label="dtype")
    shape = data.draw(st.lists(st.integers(0, 5), max_size=4).map(tuple), label="shape")
    members[name] = np.zeros(shape, dtype)
    buf = io.BytesIO()
    np.savez(buf, **members)
    _write_lbm(tmp / "f.lbm", json.dumps(header), buf.getvalue())
    _load_or_refuse(tmp / "f.lbm")


@pytest.fixture(scope="module")
def float_spec(tmp_path_factory):
    """The arrays and layer spec of a float CNN in lowbit's ``.npz`` format, and a work folder."""
    from lowbit.sw.digits import digits_split, train_cnn
    tmp = tmp_path_factory.mktemp("fuzzf")
    xtr, ytr, _, _ = digits_split()
    train_cnn(xtr, ytr, epochs=1).save_npz(tmp / "good.npz")
    arrays = dict(np.load(tmp / "good.npz"))
    return _Good((json.loads(str(arrays.pop("spec"))), arrays, tmp))


@FUZZ
@given(data=st.data(), new=JSON)
def test_float_npz_spec_field_replaced_by_any_json(float_spec, data, new):
    from lowbit.sw.floatnet import FloatNet
    spec, arrays, tmp = float_spec
    path = data.draw(st.sampled_from(sorted(_paths(spec), key=repr)), label="path")
    np.savez(tmp / "f.npz", spec=np.array(json.dumps(_replace(spec, path, new))), **arrays)
    try:
        net = FloatNet.load_npz(tmp / "f.npz")
    except LowbitError:
        return
    if int(np.prod(net.input_shape)) <= 4096:
        net.forward(np.zeros((1, *net.input_shape)))
