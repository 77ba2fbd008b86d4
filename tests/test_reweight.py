"""Re-weighting without place-and-route, proven by bitstream identity.

A reweightable build's netlist does not depend on the weights, so builds of two models with the same
architecture place the *same* design (identical ``top.random.asc``); re-weighting model A's build with
model B's weights must then give B's freshly built bitstream byte for byte. The one-pass patcher is also
checked against icebram's own output. (Times are printed for the notes, not asserted.)
"""

import json
import time

import numpy as np
import pytest

from lowbit.sw.benchmarks import random_dense_model
from lowbit.sw.build import build, load_build
from lowbit.sw.errors import LowbitError
from lowbit.sw.model import Model
from lowbit.sw.reweight import patch_asc, patch_asc_fast, random_contents, reweight, rom_contents


def two_layer(seed, n_hidden=8):
    a = random_dense_model(16, n_hidden, requant=True, seed=seed)
    b = random_dense_model(n_hidden, 4, seed=seed + 1)
    return Model((16,), a.input_q, [a.layers[0], b.layers[0]]).validate()


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    d = tmp_path_factory.mktemp("rw")
    t0 = time.monotonic()
    build(two_layer(1), "icebreaker", d / "A", reweightable=True)
    t_build = time.monotonic() - t0
    build(two_layer(10), "icebreaker", d / "B", reweightable=True)
    return d, t_build


def test_reweighted_bitstream_equals_a_fresh_build(builds, capsys):
    d, t_build = builds
    assert (d / "A" / "top.random.asc").read_bytes() == (d / "B" / "top.random.asc").read_bytes()
    assert (d / "A" / "top.bin").read_bytes() != (d / "B" / "top.bin").read_bytes()
    result = reweight(d / "A", Model.load(d / "B" / "model.lbm"))
    assert (d / "A" / "top.bin").read_bytes() == (d / "B" / "top.bin").read_bytes()
    model, _ = load_build(d / "A")
    assert model.layers[0].weight.tolist() == two_layer(10).layers[0].weight.tolist()
    with capsys.disabled():
        print(f"\n[reweight] build {t_build:.1f} s, reweight {result['seconds']:.2f} s")


def test_one_pass_patcher_equals_icebram(builds):
    d, _ = builds
    model, settings = load_build(d / "B")
    arrays = [tuple(a) for a in settings["arrays"]]
    random = random_contents(model, arrays, settings["rom_seed"])
    work = d / "cmp"
    work.mkdir()
    (work / "in.asc").write_bytes((d / "B" / "top.random.asc").read_bytes())
    patch_asc(work, "in.asc", "icebram.asc", random, rom_contents(model, arrays))
    fast = patch_asc_fast((work / "in.asc").read_text(), random, rom_contents(model, arrays))
    assert fast.strip() == (work / "icebram.asc").read_text().strip()


def test_reweight_refuses_another_architecture_and_plain_builds(builds, tmp_path):
    d, _ = builds
    with pytest.raises(LowbitError, match="architecture differs"):
        reweight(d / "B", two_layer(3, n_hidden=6))
    settings = json.loads((d / "B" / "build.json").read_text())
    settings["reweightable"] = False
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "build.json").write_text(json.dumps(settings))
    (plain / "model.lbm").write_bytes((d / "B" / "model.lbm").read_bytes())
    with pytest.raises(LowbitError, match="was not built with --reweightable"):
        reweight(plain, two_layer(3))
