"""``lowbit bench``: cycles and utilisation tables (simulation), optionally synthesis figures."""

import sys
import tempfile

from ..bench import SYNTH_CONFIGS, cycle_rows, overlay_rows, reference_rows, synth_config_name, synth_rows
from ..cli import emit
from ..errors import LowbitError

NAME = "bench"
HELP = ("cycles and PE utilisation of the demo models and Dense layers, integer-reference speed; "
        "--synth adds LCs and Fmax")


def add_arguments(p):
    p.add_argument("--synth", action="store_true", help="also synthesise engines for UP5K and ECP5-85F (minutes)")
    p.add_argument("--synth-only", metavar="TEXT",
                   help="synthesise only the rows whose name or device contains TEXT (e.g. array, ecp5-85f)")
    p.add_argument("--json", action="store_true")


def check_synth_only(text) -> None:
    """``--synth-only TEXT`` must select at least one row (matched as synth_rows matches): refused before
    the minutes of simulation that come first, with the valid names."""
    if text is None:
        return
    names = [synth_config_name(*row) for row in SYNTH_CONFIGS]
    devices = sorted({row[1] for row in SYNTH_CONFIGS})
    if not text or not any(text in name or text in row[1] for name, row in zip(names, SYNTH_CONFIGS)):
        raise LowbitError(f"--synth-only {text!r} matches no synthesis row",
                          f"give part of a row name ({', '.join(dict.fromkeys(names))}) or a device "
                          f"({', '.join(devices)})")


def run(args):
    check_synth_only(args.synth_only)
    progress = (lambda m: None) if args.json else (lambda m: sys.stderr.write(f"[lowbit] {m}\n"))
    rows = cycle_rows(progress)
    result = {"rows": rows}
    lines = [f"{'name':<18} {'arrays':<22} {'MACs':>7} {'cycles':>8} {'util':>7}"]
    lines += [f"{r['name']:<18} {str(r['arrays']):<22} {r['macs']:>7} {r['cycles']:>8} {r['utilization']:>7.1%}"
              for r in rows]
    ref = reference_rows()
    result["reference"] = ref
    lines.append("")
    lines += [f"integer reference {r['name']}: {r['inferences_per_s']:.0f} inferences/s (NumPy, batch {r['batch']})"
              for r in ref]
    orows = overlay_rows(progress)
    result["overlay"] = orows
    lines.append("")
    lines.append(f"{'overlay (planned)':<18} {'device':<11} {'array':<8} {'PEs':>4} {'DSP':>4} {'port':>5} {'cycles':>7}  roofline per layer")
    lines += [f"{r['name']:<18} {r['device']:<11} {r['array'][0]}x{r['array'][1]:<6} {r['pes']:>4} {r['dsp_products']:>4} {r['port_bits']:>5} "
              f"{r['cycles']:>7}  {' '.join(f'{f:.0%} {b}' for f, b in zip(r['roofline_fraction'], r['bounds']))}"
              if r["fits"] else f"{r['name']:<18} {r['device']:<11} does not fit: {r['error']}" for r in orows]
    if args.synth or args.synth_only:
        with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as tmp:
            srows = synth_rows(tmp, progress, only=args.synth_only)
        result["synthesis"] = srows
        lines.append("")
        lines.append(f"{'synthesised':<30} {'device':<11} {'logic':>6} {'/MAC':>6} {'BRAM':>5} {'DSP':>4} {'Fmax MHz':>9}")
        lines += [f"{r['name']:<30} {r['device']:<11} {r['logic']:>6} {r['lcs_per_mac']:>6} {r['bram']:>5} "
                  f"{r['dsp']:>4} {r['fmax_mhz']:>9}" + (f"  {r['macs_per_s_at_fmax'] / 1e9:.2f} GMAC/s at Fmax"
                                                       if r["what"] == "overlay" else "") if r["fits"] else f"{r['name']:<30} {r['device']:<11} {r['error']}"
                  for r in srows]
    emit(result, args.json, "\n".join(lines))
    return 0
