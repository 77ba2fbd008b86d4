"""``lowbit demo``: train -> quantize -> build for iCEBreaker -> run the digits test split on the
simulated board -> report. No board needed; every artefact lands in one folder."""

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..flow.build import build
from ..cli import emit
from ..data.digits import digits_split, train_cnn, train_mlp
from ..ir.intref import predict
from ..quant.posttrain import quantize_net

NAME = "demo"
HELP = "end to end on the bundled digits: train, quantize, build for a board, run the simulated board"


def add_arguments(p):
    p.add_argument("-o", "--output", default="out/demo", help="folder for every artefact")
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--bits", type=int, default=4, help="weight and activation bits")
    p.add_argument("--board", default="icebreaker")
    p.add_argument("--json", action="store_true")


def run(args):
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda m: None) if args.json else (lambda m: sys.stderr.write(f"[lowbit] {m}\n"))
    t0 = time.monotonic()
    xtr, ytr, xte, yte = digits_split()
    say(f"training the digits {args.model} ({len(xtr)} train / {len(xte)} test images)")
    net = (train_mlp if args.model == "mlp" else train_cnn)(xtr, ytr)
    net.save_npz(out / f"{args.model}_float.npz")
    np.savez(out / "digits_test.npz", x=xte, y=yte)
    float_acc = float(np.mean(np.argmax(net.forward(xte), 1) == yte))
    say(f"quantizing to {args.bits}-bit weights and activations (per-channel, MSE calibration)")
    model = quantize_net(net, xtr, weight_bits=args.bits, act_bits=args.bits, per_channel=True, calib="mse")
    model.save(out / f"{args.model}_{args.bits}bit.lbm")
    ref_out, ref_pred = predict(model, xte)
    ref_acc = float(np.mean(ref_pred == yte))
    say(f"building for {args.board} (Yosys + nextpnr)")
    build_dir = out / f"build_{args.board}"
    report = build(model, args.board, build_dir, progress=say)
    say(f"running the {len(xte)} test images through the simulated board (Verilator + cocotb)")
    from ..flow.simulate import simulate_build
    # The same path as 'lowbit run --sim': the core the build record describes, ROMs as built.
    sim = simulate_build(build_dir, model.quantize_input(xte).reshape(len(xte), -1), progress=say)
    values = np.array(sim["values"])
    mismatches = int(np.sum(np.any(values != ref_out.reshape(len(xte), -1), axis=1)))
    hw_acc = float(np.mean(np.array(sim["argmax"]) == yte))
    from ..flow.synth import family_of_utilization
    lut = family_of_utilization(report["utilization"]).logic_resource
    result = {
        "model": args.model, "bits": args.bits, "board": args.board, "n": int(len(xte)), "arrays": report["arrays"],
        "architecture": report["architecture"], "architecture_reason": report["architecture_reason"],
        "pes": report["pes"],
        "dsp_used": report["utilization"].get(family_of_utilization(report["utilization"]).dsp_resource, {}).get("used", 0),
        "float_accuracy": float_acc, "reference_accuracy": ref_acc, "hardware_accuracy": hw_acc,
        "mismatches": mismatches, "bit_exact": mismatches == 0,
        "cycles_per_inference": report["cycles_per_inference"], "utilization_pe": report["utilization_pe"],
        "logic_cells": report["utilization"][lut]["used"], "logic_capacity": report["utilization"][lut]["available"],
        "fmax_mhz": report["fmax_mhz"], "clock_mhz": report["clock_mhz"], "timing_met": report["timing_met"],
        "inferences_per_s": report["inferences_per_s"], "bound": report["bound"],
        "compute_inferences_per_s": report["compute_inferences_per_s"],
        "link_inferences_per_s": report["link"]["inferences_per_s"], "baud": report["baud"],
        "sim_wall_seconds": sim["wall_seconds"],
        "total_seconds": round(time.monotonic() - t0, 1), "artefacts": str(out),
    }
    (out / "demo.json").write_text(json.dumps(result, indent=1))
    text = "\n".join([
        f"digits {args.model}, {args.bits}-bit, on {args.board} (simulated board, {len(xte)} test images)",
        f"  architecture: {report['architecture']} ({report['pes']} PEs; lowbit build chose it: "
        f"{report['architecture_reason']})",
        f"  accuracy: float {float_acc:.2%}   integer reference {ref_acc:.2%}   hardware {hw_acc:.2%}",
        f"  bit-exact agreement with the reference: {'yes' if mismatches == 0 else f'NO, {mismatches} differ'}",
        f"  {report['cycles_per_inference']} cycles/inference, PE utilisation {report['utilization_pe']:.1%}, "
        f"{result['logic_cells']}/{result['logic_capacity']} {lut}",
        f"  Fmax {report['fmax_mhz']} MHz (clock {report['clock_mhz']} MHz, timing "
        f"{'met' if report['timing_met'] else 'FAILED'}) -> {report['compute_inferences_per_s']:.0f} inferences/s "
        f"computed; the {report['baud']} baud link carries {report['link']['inferences_per_s']:.0f}: "
        f"{report['inferences_per_s']:.0f} inferences/s ({report['bound']}-bound)",
        f"  simulated board run: {sim['wall_seconds']} s; artefacts in {out}",
    ])
    emit(result, args.json, text)
    return 0 if mismatches == 0 else 1
