"""``lowbit run``: send a data set through a board (serial port) or a simulated board, check it."""

import sys
from pathlib import Path

import numpy as np

from ..flow.record import load_build
from ..cli import emit
from ..errors import LowbitError
from ..ir.intref import run as reference
from ..inputs import load_data

NAME = "run"
HELP = "run a data set through a built board (--port) or its RTL simulation (--sim), compare with the reference"
#: Inputs a gate-level run takes by default (it runs about 20 times slower than the RTL).
NETLIST_LIMIT = 32


def add_arguments(p):
    p.add_argument("build", help="build folder written by 'lowbit build'")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", help="serial port of the board, e.g. /dev/ttyUSB1")
    target.add_argument("--sim", action="store_true", help="simulate the board's RTL (Verilator + cocotb)")
    p.add_argument("--data", required=True, help=".npz with inputs x and optional labels y")
    p.add_argument("--model", metavar="MODEL",
                   help="an overlay build: run this model instead (loaded through the link first, as "
                        "'lowbit load' does, when the board holds another); compared with its reference")
    p.add_argument("--batch", type=int, default=8, help="inputs per INFER frame, at least 1 (capped by the build's "
                   "--max-batch; default 8)")
    p.add_argument("--trace", metavar="FILE.vcd", help="with --sim: write the waveform of the board simulation")
    p.add_argument("--netlist", action="store_true",
                   help="with --sim: simulate the gate-level netlist Yosys wrote for the bitstream (iCE40), "
                        "on the first --limit inputs")
    p.add_argument("--limit", type=int, default=None,
                   help=f"run only the first N inputs (default: all; {NETLIST_LIMIT} with --netlist)")
    p.add_argument("--json", action="store_true")


def run(args):
    if args.batch < 1:
        raise LowbitError(f"--batch {args.batch} must be at least 1",
                          "inputs per INFER frame; the build's --max-batch caps it")
    if args.limit is not None and args.limit < 1:
        raise LowbitError(f"--limit {args.limit} must be at least 1", "the number of inputs to run")
    if args.netlist and not args.sim:
        raise LowbitError("--netlist needs --sim", "the netlist runs in the simulator")
    model, settings = load_build(args.build)
    other = None
    if args.model is not None:
        from ..flow.record import image_for_build
        from ..quant.load import load_model
        other = load_model(args.model)
        image_for_build(settings, other)      # refused before any data is read or sent
        model = other
    x, y = load_data(args.data)
    limit = args.limit or (NETLIST_LIMIT if args.netlist else None)
    if limit is not None:
        x, y = x[:limit], (None if y is None else y[:limit])
    codes = model.quantize_input(x)
    ref = reference(model, codes).reshape(len(x), -1)
    flat = codes.reshape(len(x), -1)
    say = lambda m: sys.stderr.write(f"[lowbit] {m}\n")
    if args.trace and not args.sim:
        raise LowbitError("--trace needs --sim", "a waveform comes from the simulated board")
    if args.sim:
        from ..flow.simulate import simulate_build
        say(f"simulating {len(x)} inputs through the board as built ({'gate-level netlist' if args.netlist else 'RTL'}"
            f", UART divisor {settings['divisor']})")
        res = simulate_build(args.build, flat, batch=args.batch, progress=say, trace=args.trace,
                             netlist=args.netlist, model=other)
        values, argmax = np.array(res["values"]), np.array(res["argmax"])
        counters, extra = res["counters"], {"wall_seconds": res["wall_seconds"], "sim_cycles": res["sim_cycles"],
                                            "layers": list(res["identity"]["layers"]),
                                            "rom_source": res["rom_source"],
                                            "link_bytes": {"sent": res["bytes_sent"], "received": res["bytes_received"]}}
        extra["simulation"] = "netlist" if args.netlist else "rtl"
        extra["sim_run_seconds"] = round(res["run_seconds"], 2)
        extra["sim_inputs_per_s"] = round(len(x) / max(res["run_seconds"], 1e-9), 2)
        if args.trace:
            extra["trace"] = str(args.trace)
        if res.get("load"):
            extra["load"] = res["load"]
        if res.get("booted_from_flash"):
            extra["booted_from_flash"] = True
    else:
        from ...hw.accel import architecture_hash
        from ..link.host import Device, SerialTransport
        device = Device(SerialTransport(args.port, settings["baud"]), timeout_s=2.0)
        ident = device.identify()
        expected = architecture_hash(model, settings["arrays"])
        extra_load = None
        if settings["arch"] == "overlay" and settings["overlay"].get("loadable"):
            # An overlay runs whichever model it holds: load this one first if it holds another (or none).
            from ..flow.loader import load_serial, needs_load
            from ..flow.record import image_for_build
            image = image_for_build(settings, model)
            expected = image.identity.config_hash
            if needs_load(ident, image):
                say(f"loading {args.model or 'the build model'} into the board ({image.total_bytes} bytes)")
                extra_load = load_serial(device, image, settings)
                ident = device.identify()
        if ident.config_hash != expected:
            from ..flow.synth import BITSTREAM_SUFFIX
            bitstream = Path(args.build) / f"top.{BITSTREAM_SUFFIX[settings['family']]}"
            raise LowbitError(f"the board on {args.port} holds another design (architecture hash "
                              f"{ident.config_hash:08x}, this build folder's is {expected:08x})",
                              f"flash {bitstream} first")
        values, argmax = device.infer(flat, batch=args.batch)
        counters, extra = device.read_counters(), {"layers": list(ident.layers)}
        if extra_load:
            extra["load"] = extra_load
    mismatches = int(np.sum(np.any(values != ref, axis=1)))
    last_batch = len(x) % args.batch or args.batch
    result = {"n": int(len(x)), "mismatches": mismatches, "bit_exact": mismatches == 0,
              "cycles_per_inference": round(counters["cycles"] / min(last_batch, settings["max_batch"]), 1),
              "link_errors": counters["errors"], **extra}
    if y is not None:
        result["accuracy"] = float(np.mean(argmax == y))
        result["reference_accuracy"] = float(np.mean(np.argmax(ref, axis=1) == y))
    text = [f"{len(x)} inputs, {mismatches} outputs differ from the integer reference"
            f"{' (bit-exact)' if mismatches == 0 else ''}"]
    if y is not None:
        text.append(f"hardware accuracy {result['accuracy']:.2%}, reference {result['reference_accuracy']:.2%}")
    emit(result, args.json, "\n".join(text))
    if mismatches:
        raise LowbitError(f"{mismatches} of {len(x)} outputs differ from the reference", "this is a lowbit bug: please report it")
    return 0
