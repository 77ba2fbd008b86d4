"""One bitstream, many models, through the CLI: a loadable overlay built for iCEBreaker (weights in its
SPRAM, which has no initial contents) boots its own model from the flash image the build writes, and
runs another one — a different layer count, shapes and widths — loaded through the simulated link; both
bit-exact with their references; what does not fit is refused before anything is sent; `lowbit plan`
agrees with the build."""

import json

import numpy as np
import pytest

from lowbit.sw.data.synthetic import random_mlp


@pytest.fixture(scope="module")
def built(tmp_path_factory, cli_quiet):
    d = tmp_path_factory.mktemp("load")
    random_mlp((24, 16, 10), 4, seed=1).save(d / "a.lbm")
    random_mlp((40, 12, 12, 6), 2, seed=2).save(d / "b.lbm")
    random_mlp((40, 300, 6), 2, seed=3).save(d / "big.lbm")          # more parameters than the build holds
    rng = np.random.default_rng(0)
    np.savez(d / "a.npz", x=rng.integers(0, 16, (10, 24)).astype(float))
    np.savez(d / "b.npz", x=rng.integers(0, 4, (12, 40)).astype(float))
    code, out, err = cli_quiet("build", str(d / "a.lbm"), "--board", "icebreaker", "--also", str(d / "b.lbm"),
                               "-o", str(d / "out"), "--json")
    assert code == 0, err
    return d, json.loads(out)


def test_the_loadable_overlay_keeps_its_weights_in_spram(built):
    d, report = built
    assert report["architecture"] == "overlay" and report["timing_met"]
    assert report["utilization"]["ICESTORM_SPRAM"]["used"] == 4
    record = json.loads((d / "out" / "build.json").read_text())
    assert record["overlay"]["loadable"] and record["overlay"]["weight_store"] == "spram"
    assert record["input_buffer"] == 40 * record["max_batch"]


def test_plan_agrees_with_the_build(built, cli):
    d, report = built
    code, out, err = cli("plan", str(d / "a.lbm"), "--board", "icebreaker", "--also", str(d / "b.lbm"), "--json")
    plan = json.loads(out)
    assert code == 0, err
    assert (plan["architecture"], plan["arrays"], plan["pes"]) == (report["architecture"], report["arrays"],
                                                                   report["pes"])
    code, out, err = cli("plan", str(d / "b.lbm"), "--board", "icebreaker", "--into", str(d / "out"), "--json")
    assert code == 0 and json.loads(out)["into"]["fits"]


def test_it_boots_its_own_model_from_the_flash_image_and_is_bit_exact(built, cli):
    d, report = built
    # flash.bin: the bitstream at 0, erased bytes, the model blob at the documented offset.
    image, blob, bitstream = ((d / "out" / name).read_bytes() for name in ("flash.bin", "model_blob.bin", "top.bin"))
    offset = report["flash"]["offset"]
    assert image[:len(bitstream)] == bitstream and image[offset:] == blob and blob[:4] == b"LWBM"
    assert set(image[len(bitstream):offset]) == {0xFF}
    # The simulated board boots from that blob (SPI flash model behind its flash pins), nothing loaded.
    code, out, err = cli("run", str(d / "out"), "--sim", "--data", str(d / "a.npz"), "--json")
    result = json.loads(out)
    assert code == 0, err
    assert result["n"] == 10 and result["mismatches"] == 0
    assert result["booted_from_flash"] and "load" not in result


def test_another_model_is_loaded_through_the_link_and_bit_exact(built, cli):
    d, report = built
    code, out, err = cli("run", str(d / "out"), "--sim", "--model", str(d / "b.lbm"), "--data", str(d / "b.npz"),
                         "--json")
    result = json.loads(out)
    assert code == 0, err
    assert result["n"] == 12 and result["mismatches"] == 0
    assert [l["k"] for l in result["layers"]] == [40, 12, 12]
    code, out, err = cli("load", str(d / "out"), str(d / "b.lbm"), "--sim", "--json")
    loaded = json.loads(out)
    assert code == 0, err
    # Loading takes the link's time (a few ms at 1 Mbaud), not a rebuild's.
    assert loaded["seconds_at_clock"] * 100 < report["seconds"]


def test_what_does_not_fit_is_refused_before_anything_is_sent(built, cli):
    d, _ = built
    code, out, err = cli("load", str(d / "out"), str(d / "big.lbm"), "--sim")
    assert code == 2 and ("activation words" in err or "parameters need" in err)
    assert "Traceback" not in err
    code, out, err = cli("run", str(d / "out"), "--sim", "--model", str(d / "big.lbm"), "--data", str(d / "b.npz"))
    assert code == 2 and "Traceback" not in err
