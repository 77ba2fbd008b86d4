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

from lowbit.sw.benchmarks import random_dense_model
from lowbit.sw.build import build, load_build
from lowbit.sw.errors import LowbitError
from lowbit.sw.model import Model
from lowbit.sw.reweight import (patch_asc, patch_asc_fast, patch_config, patch_config_fast, random_contents,
                                read_config_brams, reweight, rom_contents)

#: board -> (placed design with random ROMs, bitstream, ROM block)
BOARDS = {"icebreaker": ("top.random.asc", "top.bin", 256), "ulx3s-85f": ("top.random.config", "top.bit", 512)}


def two_layer(seed, n_hidden=8):
    a = random_dense_model(16, n_hidden, requant=True, seed=seed)
    b = random_dense_model(n_hidden, 4, seed=seed + 1)
    return Model((16,), a.input_q, [a.layers[0], b.layers[0]]).validate()


@pytest.fixture(scope="module", params=sorted(BOARDS))
def builds(request, tmp_path_factory):
    board = request.param
    d = tmp_path_factory.mktemp(f"rw-{board}")
    t0 = time.monotonic()
    build(two_layer(1), board, d / "A", reweightable=True)
    t_build = time.monotonic() - t0
    build(two_layer(10), board, d / "B", reweightable=True)
    return d, t_build, board


def test_reweighted_bitstream_equals_a_fresh_build(builds, capsys):
    d, t_build, board = builds
    placed, bitstream, _ = BOARDS[board]
    assert (d / "A" / placed).read_bytes() == (d / "B" / placed).read_bytes()
    assert (d / "A" / bitstream).read_bytes() != (d / "B" / bitstream).read_bytes()
    result = reweight(d / "A", Model.load(d / "B" / "model.lbm"))
    assert (d / "A" / bitstream).read_bytes() == (d / "B" / bitstream).read_bytes()
    model, _ = load_build(d / "A")
    assert model.layers[0].weight.tolist() == two_layer(10).layers[0].weight.tolist()
    assert (d / "A" / "roms" / "layer0_weights.hex").read_text() == (d / "B" / "roms" / "layer0_weights.hex").read_text()
    with capsys.disabled():
        print(f"\n[reweight {board}] build {t_build:.1f} s, reweight {result['seconds']:.2f} s")


def test_one_pass_patcher_equals_the_tool(builds):
    d, _, board = builds
    placed, _, block = BOARDS[board]
    model, settings = load_build(d / "B")
    arrays = [tuple(a) for a in settings["arrays"]]
    assert settings["rom_block"] == block
    random = random_contents(model, arrays, settings["rom_seed"], block)
    real = rom_contents(model, arrays, block)
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
        patch((d / "B" / placed).read_text(), wrong_seed, rom_contents(model, arrays, block))


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
