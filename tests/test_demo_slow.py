"""The whole demo as a user runs it (`lowbit demo --json`): train, quantize, build for iCEBreaker, all
540 test images through the simulated board. Its JSON must say bit-exact, and its figures must agree
with each other and with the artefacts it wrote."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lowbit.sw.ir.intref import predict
from lowbit.sw.ir.model import Model


@pytest.mark.slow
def test_demo_runs_all_540_images_bit_exactly(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "lowbit.sw.cli", "demo", "--json", "-o", str(out)],
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result == json.loads((out / "demo.json").read_text())
    assert result["n"] == 540 and result["mismatches"] == 0 and result["bit_exact"] is True
    for key in ("float_accuracy", "reference_accuracy", "hardware_accuracy"):
        assert 0.0 <= result[key] <= 1.0 and float(result[key] * 540).is_integer(), (key, result[key])
    # Every output equal means every argmax equal: the board's accuracy is the reference's.
    assert result["hardware_accuracy"] == result["reference_accuracy"]
    # The reference accuracy is that of the model file the demo wrote, on the data file it wrote.
    data = np.load(out / "digits_test.npz")
    model = Model.load(out / f"{result['model']}_{result['bits']}bit.lbm")
    _, pred = predict(model, data["x"])
    assert len(data["y"]) == 540 and result["reference_accuracy"] == float(np.mean(pred == data["y"]))
    assert result["timing_met"] and result["fmax_mhz"] >= result["clock_mhz"]
    # Throughput: the compute-bound rate from the cycles, the link-bound one from the protocol's bytes;
    # the rate given is the smaller, and "bound" names it.
    compute, link = result["compute_inferences_per_s"], result["link_inferences_per_s"]
    assert compute == pytest.approx(result["clock_mhz"] * 1e6 / result["cycles_per_inference"], rel=1e-3)
    assert result["inferences_per_s"] == min(compute, link)
    assert result["bound"] == ("link" if link < compute else "compute")
    assert 0 < result["logic_cells"] <= result["logic_capacity"]
