"""Re-weighting without place-and-route, proven by bitstream identity, on iCE40 and ECP5.

A reweightable build's netlist does not depend on the weights, so builds of two models with the same
architecture place the *same* design (identical ``top.random.asc`` / ``top.random.config``);
re-weighting model A's build with model B's weights must then give B's freshly built bitstream byte for
byte. The one-pass patchers are also checked against icebram's and ecpbram's own output. (Times are
printed for the notes, not asserted.)
"""

import json
import time

import pytest

from lowbit.sw.data.synthetic import random_dense_model
from lowbit.sw.flow.build import build
from lowbit.sw.flow.record import load_build
from lowbit.sw.errors import LowbitError
from lowbit.sw.ir.model import Model
from lowbit.sw.flow.rom import random_contents, rom_images
from lowbit.sw.flow.reweight import (patch_asc, patch_asc_fast, patch_config, patch_config_fast,
                                read_config_brams, reweight)

#: board -> (placed design with random ROMs, bitstream, ROM block)
BOARDS = {"icebreaker": ("top.random.asc", "top.bin", 256), "ulx3s-85f": ("top.random.config", "top.bit", 512)}


def two_layer(seed, n_hidden=8):
    a = random_dense_model(16, n_hidden, requant=True, seed=seed)
    b = random_dense_model(n_hidden, 4, seed=seed + 1)
    return Model((16,), a.input_q, [a.layers[0], b.layers[0]]).validate()


def _shared(tmp_path_factory, name):
    """A folder all xdist workers share."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if root.name.startswith("popen-gw") else root
    d = root / name
    d.mkdir(exist_ok=True)
    return d


def _build_once(d, name, model, board):
    """``model``'s reweightable build in ``d / name``, made by the first process to get ``d``'s lock;
    the others wait for it and reuse it. Returns its build time."""
    import fcntl
    with open(d.with_name(f"{d.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = d / f"{name}.done.json"
        if not done.exists():
            t0 = time.monotonic()
            build(model, board, d / name, reweightable=True)
            done.write_text(json.dumps({"t_build": time.monotonic() - t0}))
        return json.loads(done.read_text())["t_build"]


# Each board's tests run on one xdist worker (tests/conftest.py SHARED_BUILDS): a second one would
# only wait for the first one's build.
@pytest.fixture(scope="module", params=sorted(BOARDS))
def builds(request, tmp_path_factory):
    """Each board's reweightable build of model B, made once per test run (pytest re-creates a
    parametrized module fixture at every parameter switch, and with xdist both workers may need it:
    the clean CI run once built each twice, 143 + 131 s for ULX3S). Model A's build, for the
    bitstream identity, is made only by the test that needs it."""
    board = request.param
    d = _shared(tmp_path_factory, f"rw-{board}")
    return d, _build_once(d, "B", two_layer(10), board), board


# The identity on ECP5 takes a second place-and-route of minutes: in the slow set. In CI its patchers
# and read-back are checked on build B (below) and the whole reweight on iCE40.
@pytest.mark.parametrize("builds", ["icebreaker", pytest.param("ulx3s-85f", marks=pytest.mark.slow)], indirect=True)
def test_reweighted_bitstream_equals_a_fresh_build(builds, capsys):
    d, t_build, board = builds
    _build_once(d, "A", two_layer(1), board)
    placed, bitstream, _ = BOARDS[board]
    assert (d / "A" / placed).read_bytes() == (d / "B" / placed).read_bytes()
    assert (d / "A" / bitstream).read_bytes() != (d / "B" / bitstream).read_bytes()
    result = reweight(d / "A", Model.load(d / "B" / "model.lbm"))
    assert (d / "A" / bitstream).read_bytes() == (d / "B" / bitstream).read_bytes()
    model, _ = load_build(d / "A")
    assert model.layers[0].weight.tolist() == two_layer(10).layers[0].weight.tolist()
    assert (d / "A" / "roms" / "layer0_weights.hex").read_text() == (d / "B" / "roms" / "layer0_weights.hex").read_text()
    # its RTL simulation still checks the design that was built (core.v, with the placeholder ROMs)
    from lowbit.sw.flow.simulate import build_core
    assert build_core(d / "A")[1] == "bitstream"
    with capsys.disabled():
        print(f"\n[reweight {board}] build {t_build:.1f} s, reweight {result['seconds']:.2f} s")


def test_one_pass_patcher_equals_the_tool(builds):
    d, _, board = builds
    placed, _, block = BOARDS[board]
    model, settings = load_build(d / "B")
    arrays = [tuple(a) for a in settings["arrays"]]
    assert settings["rom_block"] == block
    random = random_contents(model, arrays, settings["rom_seed"], block)
    real = rom_images(model, arrays, reweightable=True, rom_block=block)
    work = d / "cmp"
    work.mkdir()
    (work / "in").write_bytes((d / "B" / placed).read_bytes())
    if board == "icebreaker":
        patch_asc(work, "in", "tool.out", random, real)
        fast = patch_asc_fast((work / "in").read_text(), random, real)
        assert fast.strip() == (work / "tool.out").read_text().strip()
    else:
        patch_config(work, "in", "tool.out", random, real)      # also checks itself against the fast one
        fast = patch_config_fast((work / "in").read_text(), random, real)
        tool_brams = read_config_brams((work / "tool.out").read_text())
        assert read_config_brams(fast) == tool_brams
        assert read_config_brams(fast) != read_config_brams((work / "in").read_text())
        # ecpbram rewrites the whole file; everything but the block RAM contents must be untouched.
        strip = lambda t: [l for l in t.split("\n") if l and not l.startswith(".bram_init") and len(l) != 31]
        assert strip(fast) == strip((work / "in").read_text())


def test_fast_patchers_refuse_contents_they_cannot_find(builds):
    d, _, board = builds
    placed, _, block = BOARDS[board]
    model, settings = load_build(d / "B")
    arrays = [tuple(a) for a in settings["arrays"]]
    wrong_seed = random_contents(model, arrays, settings["rom_seed"] + 1, block)
    patch = patch_asc_fast if board == "icebreaker" else patch_config_fast
    with pytest.raises(LowbitError, match="ROM contents not found"):
        patch((d / "B" / placed).read_text(), wrong_seed, rom_images(model, arrays, reweightable=True, rom_block=block))


def test_reweight_refuses_another_architecture_and_plain_builds(builds, tmp_path):
    d, _, _ = builds
    with pytest.raises(LowbitError, match="needs a different netlist: layer 0 \\(dense\\) shape"):
        reweight(d / "B", two_layer(3, n_hidden=6))
    settings = json.loads((d / "B" / "build.json").read_text())
    settings["reweightable"] = False
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "build.json").write_text(json.dumps(settings))
    (plain / "model.lbm").write_bytes((d / "B" / "model.lbm").read_bytes())
    with pytest.raises(LowbitError, match="was not built with --reweightable"):
        reweight(plain, two_layer(3))


def test_simulation_reads_the_roms_out_of_the_bitstream(builds):
    """A reweightable build is simulated with the ROM contents its final bitstream holds."""
    from lowbit.sw.flow.simulate import build_core
    d, _, board = builds
    model, settings = load_build(d / "B")
    core, source = build_core(d / "B")
    assert source == "bitstream"
    expected = rom_images(model, [tuple(a) for a in settings["arrays"]], reweightable=True, rom_block=settings["rom_block"])
    assert {f"{layer}_{kind}": words for layer, roms in core.rom_init.items() for kind, words in roms.items()} == \
        {name: words for name, (_, words) in expected.items()}


def _flip_asc_bit(asc_text, pos, bit):
    """``asc_text`` with bit ``bit`` of the BRAM at ``pos`` inverted."""
    lines = asc_text.split("\n")
    n = next(i for i, line in enumerate(lines) if line.startswith(".ram_data") and
             tuple(map(int, line.split()[1:3])) == pos)
    value = sum(int(lines[n + 1 + j], 16) << (256 * j) for j in range(16)) ^ (1 << int(bit))
    for j in range(16):
        lines[n + 1 + j] = f"{(value >> (256 * j)) & ((1 << 256) - 1):064x}"
    return "\n".join(lines)


def test_a_corrupted_rom_word_in_the_bitstream_is_a_mismatch(builds, tmp_path):
    """One flipped bit in the flashed bitstream (the first bias of the last layer) is seen by run --sim."""
    import shutil

    import numpy as np

    from lowbit.sw.flow.bitstream_roms import asc_slots, unpack_bitstream
    from lowbit.sw.flow.reweight import _slices
    from lowbit.sw.flow.simulate import simulate_build
    from lowbit.sw.flow.toolchain import run_tool
    d, _, board = builds
    if board != "icebreaker":
        pytest.skip("one family is enough for the end-to-end check; readback is tested on both")
    folder = tmp_path / "B"
    shutil.copytree(d / "B", folder, ignore=shutil.ignore_patterns("sim", "reweight"))
    model, settings = load_build(folder)
    arrays = [tuple(a) for a in settings["arrays"]]
    placeholder = random_contents(model, arrays, settings["rom_seed"], 256)
    width, words = placeholder["layer1_params"]
    key = _slices(width, words, 256)[0]           # bit 0 of words 0..255: the bias LSBs
    pos, idx = next((p, i) for p, i, bits in asc_slots((folder / "top.random.asc").read_text())
                    if np.packbits(bits).tobytes() == key)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (16, 16))
    clean = simulate_build(folder, codes)
    (folder / "bad.asc").write_text(_flip_asc_bit(unpack_bitstream(folder, "ice40"), pos, idx[0]))
    run_tool("icepack", ["bad.asc", "top.bin"], cwd=folder)
    bad = simulate_build(folder, codes)
    from lowbit.sw.ir.intref import run as reference
    ref = reference(model, codes)
    assert np.array_equal(np.array(clean["values"]), ref)
    diff = np.array(bad["values"]) - ref
    assert np.all(diff[:, 0] != 0) and not diff[:, 1:].any()    # channel 0's bias is off by one, only it
