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
from hypothesis import HealthCheck, event, given, settings
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
    from lowbit.sw.data.digits import digits_split, train_cnn
    from lowbit.sw.quant.posttrain import quantize_net
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
    from lowbit.sw.ir.intref import predict
    from lowbit.sw.ir.model import Model
    try:
        model = Model.load(path)
    except LowbitError as exc:
        assert "\n" not in str(exc)
        event("model refused")
        return False
    event("model loaded")
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
    from lowbit.sw.data.digits import digits_split, train_cnn
    tmp = tmp_path_factory.mktemp("fuzzf")
    xtr, ytr, _, _ = digits_split()
    train_cnn(xtr, ytr, epochs=1).save_npz(tmp / "good.npz")
    arrays = dict(np.load(tmp / "good.npz"))
    return _Good((json.loads(str(arrays.pop("spec"))), arrays, tmp))


@FUZZ
@given(data=st.data(), new=JSON)
def test_float_npz_spec_field_replaced_by_any_json(float_spec, data, new):
    from lowbit.sw.ir.floatnet import FloatNet
    spec, arrays, tmp = float_spec
    path = data.draw(st.sampled_from(sorted(_paths(spec), key=repr)), label="path")
    np.savez(tmp / "f.npz", spec=np.array(json.dumps(_replace(spec, path, new))), **arrays)
    try:
        net = FloatNet.load_npz(tmp / "f.npz")
    except LowbitError:
        return
    if int(np.prod(net.input_shape)) <= 4096:
        net.forward(np.zeros((1, *net.input_shape)))


# -- build records ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def build_folder(good):
    """A build folder (model.lbm, a valid build.json, an ECP5 placed design) and its record."""
    from lowbit.sw.flow.build import fold_model
    from lowbit.sw.flow.record import check_build_record
    from lowbit.sw.ir.model import Model
    from lowbit.sw.flow.synth import device
    _, _, tmp = good
    folder = tmp / "b"
    (folder / "roms").mkdir(parents=True)
    (folder / "model.lbm").write_bytes((tmp / "good.lbm").read_bytes())
    folding = fold_model(Model.load(folder / "model.lbm"), device("ecp5-85f"))
    record = {"board": "ulx3s-85f", "arch": "dataflow", "overlay": None,
              "arrays": [[f.rows, f.cols] for f in folding.layers], "clock_hz": 25e6,
              "baud": 1_000_000, "max_batch": 8, "reweightable": True, "rom_seed": 1, "family": "ecp5",
              "rom_block": 512, "timeout_bytes": 32, "mult": "lut", "requant_dsp": False, "pll": False,
              "divisor": 25}
    check_build_record(record)
    (folder / "top.random.config").write_text(".device LFE5U-85F\n.bram_init 0\n" + ("000 " * 7 + "000\n") * 256)
    return _Good((folder, record))


def _one_line_error(code, err):
    lines = [l for l in err.strip().splitlines() if not l.startswith("[lowbit] ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lowbit: error: "), (code, err)


#: Values near what a build record holds, so that some edited records stay valid.
RECORD_VALUES = st.sampled_from([0, 1, 4, 8, 25, 32, 64, 65, 256, 512, 25e6, 1e5, 1e10, True, False, None, "lut", "dsp",
                                 "ecp5", "ice40", "icebreaker", "overlay", "dataflow", [4, 4], [4, 1], [[4, 4], [4, 1]], [[4, 4]]])


@FUZZ
@given(data=st.data(), new=JSON | RECORD_VALUES)
def test_build_record_field_replaced_by_any_json(build_folder, cli, data, new):
    """run and reweight read a damaged build.json: a one-line error, or (a valid record) what they build
    from it works."""
    from lowbit.hw.accel import AccelCore
    from lowbit.sw.flow.record import load_build
    folder, record = build_folder
    path = data.draw(st.sampled_from(sorted(_paths(record), key=repr)), label="path")
    edited = _replace(record, path, new)
    (folder / "build.json").write_text(json.dumps(edited))
    try:
        model, rec = load_build(folder)
    except LowbitError as exc:
        assert "\n" not in str(exc)
        event("record refused")
    else:
        event("record accepted")
        # What 'run --sim' constructs from the record (elaboration is left to the real run).
        core = AccelCore(model, rec["arrays"], rec["clock_hz"], rec["clock_hz"] / 4, rec["max_batch"])
        core._MustUse__silence = True
    code, _, err = cli("reweight", str(folder), str(folder / "model.lbm"))
    _one_line_error(code, err)          # the fake placed design never holds the ROMs
    assert not (folder / "reweight").exists() and not list(folder.glob(".reweight.*"))


@FUZZ
@given(text=JSON.map(json.dumps) | st.text(max_size=30) | st.binary(max_size=30).map(lambda b: b.decode("latin-1")))
def test_build_record_is_any_text(build_folder, cli, text):
    folder, _ = build_folder
    (folder / "build.json").write_text(text, encoding="utf-8", errors="surrogateescape")
    code, _, err = cli("run", str(folder), "--sim", "--data", str(folder / "missing.npz"))
    _one_line_error(code, err)


# -- CLI option ranges --------------------------------------------------------------------------

INTS = st.integers(-10, 70) | st.sampled_from([-2 ** 31, 0, 115200, 3_000_000, 6_000_000, 12_000_000, 10 ** 9])
CLOCKS = st.none() | st.sampled_from(["0", "-12", "nan", "inf", "1e9", "12", "24"])


@FUZZ
@given(baud=INTS, max_batch=INTS, clock=CLOCKS, board=st.sampled_from(["icebreaker", "ulx3s-85f"]),
       seed=st.none() | INTS | st.just(2 ** 31))
def test_build_options(good, cli, monkeypatch, baud, max_batch, clock, board, seed):
    """Every combination is refused in one line or reaches build() with values the gateware supports
    (build itself is stubbed: no synthesis)."""
    from lowbit.sw.flow.record import MAX_BATCH, MAX_BAUD
    from lowbit.sw.commands import build as command
    _, _, tmp = good
    reached = []
    monkeypatch.setattr(command, "build", lambda *a, **kw: reached.append(kw) or {})
    monkeypatch.setattr(command, "summary_text", lambda report: "")
    argv = ["build", str(tmp / "good.lbm"), "--board", board, "-o", str(tmp / "out"), "--baud", str(baud),
            "--max-batch", str(max_batch)] + (["--clock-mhz", clock] if clock else []) \
        + (["--seed", str(seed)] if seed is not None else [])
    code, _, err = cli(*argv)
    event("reached build()" if reached else "refused")
    if reached:
        assert code == 0 and 1 <= reached[0]["max_batch"] <= MAX_BATCH and 1 <= reached[0]["baud"] <= MAX_BAUD
        assert reached[0]["seed"] == (1 if seed is None else seed) and 0 <= reached[0]["seed"] < 2 ** 31
    else:
        _one_line_error(code, err)
    assert not (tmp / "out").exists()


@FUZZ
@given(k=st.none() | INTS, n=st.none() | st.integers(-3, 12), batch=INTS)
def test_verilog_engine_and_run_batch_options(good, cli, monkeypatch, k, n, batch):
    import amaranth.back.verilog
    _, _, tmp = good
    monkeypatch.setattr(amaranth.back.verilog, "convert", lambda *a, **kw: "// stub\n")
    argv = ["verilog", "--engine", "-o", str(tmp / "e.v")] + (["--k", str(k)] if k is not None else []) \
        + (["--n", str(n)] if n is not None else [])
    if k is None or k <= 64:           # larger (valid) layers only take longer to generate
        code, _, err = cli(*argv)
        if (k is None or k >= 1) and (n is None or n >= 1):
            assert code == 0, err
        else:
            _one_line_error(code, err)
    code, _, err = cli("run", str(tmp), "--sim", "--data", str(tmp / "missing.npz"), "--batch", str(batch))
    _one_line_error(code, err)
    assert ("--batch" in err) == (batch < 1)


@FUZZ
@given(text=st.text(max_size=10) | st.sampled_from(["array", "engine", "ecp5-85f", "ice40-up5k", "4x4", "dsp",
                                                     "virtex", "", "systolic2d"]))
def test_bench_synth_only(cli, monkeypatch, text):
    from lowbit.sw.commands import bench as command
    selected = []
    monkeypatch.setattr(command, "cycle_rows", lambda progress: [])
    monkeypatch.setattr(command, "reference_rows", lambda: [])
    monkeypatch.setattr(command, "overlay_rows", lambda progress: [])       # planning every row took ~1 s a call
    monkeypatch.setattr(command, "synth_rows", lambda tmp, progress, only: selected.append(only) or [])
    code, _, err = cli("bench", f"--synth-only={text}", "--json")
    if selected:
        assert code == 0 and text
    else:
        _one_line_error(code, err)
        assert "matches no synthesis row" in err
