"""Board targets: any amaranth-boards platform with a UART, found by name, and the top-level wrapper.

A *core* is any ``wiring.Component`` with a serial port ``rx: In(1)``, ``tx: Out(1)`` and, optionally,
status LEDs ``leds: Out(n)``; it is built for a clock frequency the board tells it. :class:`BoardTop`
connects the core to the board's clock, power-on reset, UART pins and LEDs, and :func:`build_board`
takes it through Amaranth's platform (pin constraints) into lowbit's own synthesis flow
(:func:`lowbit.sw.flow.synth.implement`), so every board gets the same reports and fit check.

Named targets: ``icebreaker`` (iCE40 UP5K, 12 MHz) and ``ulx3s-85f`` (ECP5 85F, 25 MHz) are tested;
any other amaranth-boards platform is found by its class name without ``Platform`` (case, ``-`` and
``_`` ignored: ``icestick``, ``ulx3s-25f``, ``orangecrab-r0-2``...).
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
from pathlib import Path

from amaranth import Elaboratable, Module
from amaranth.build import ResourceError
from amaranth.lib import io

from ..sw.errors import LowbitError
from ..sw.flow.synth import DEVICES, Device, implement

__all__ = ["platform_class", "board_device", "board_clock", "BoardTop", "prepare_board",
           "build_board"]

# Capacity tables of the parts lowbit knows (keys: Amaranth's device names).
_KNOWN_PARTS = {"iCE40UP5K": "ice40-up5k", "LFE5U-85F": "ecp5-85f", "LFE5U-25F": "ecp5-25f"}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _all_platforms() -> dict:
    import amaranth_boards
    found = {}
    for info in pkgutil.iter_modules(amaranth_boards.__path__):
        if info.name.startswith("_") or info.name in ("resources", "extensions", "test"):
            continue
        try:
            module = importlib.import_module(f"amaranth_boards.{info.name}")
        except Exception:  # a board module whose optional vendor support is missing: not offered
            continue
        for attr in dir(module):
            cls = getattr(module, attr)
            if isinstance(cls, type) and attr.endswith("Platform") and not attr.startswith("_") \
                    and getattr(cls, "device", None) and getattr(cls, "resources", None):
                found.setdefault(_normalise(attr[:-len("Platform")]), cls)
    return found


def platform_class(board: str):
    """The amaranth-boards platform class for ``board`` (see the module docstring for names)."""
    platforms = _all_platforms()
    key = _normalise(board)
    if key not in platforms:
        close = difflib.get_close_matches(key, platforms, n=5, cutoff=0.6)
        raise LowbitError(f"unknown board {board!r}",
                          f"try icebreaker, ulx3s-85f{', ' + ', '.join(close) if close else ''} "
                          f"(any amaranth-boards platform name)")
    return platforms[key]


def board_device(platform) -> Device:
    """The :class:`lowbit.sw.flow.synth.Device` for a platform: nextpnr options from Amaranth's own tables,
    capacities where lowbit knows the part (otherwise nextpnr alone judges fit)."""
    family = type(platform).__mro__
    names = [c.__name__ for c in family]
    if "LatticeICE40Platform" in names or "SiliconBluePlatform" in names:
        fam = "ice40"
        args = (platform._nextpnr_device_options[platform.device], "--package",
                platform.package.lower() + platform._nextpnr_package_options.get(platform.device, ""))
    elif "LatticeECP5Platform" in names or (getattr(platform, "family", None) == "ecp5"):
        fam = "ecp5"
        args = (platform._nextpnr_device_options[platform.device], "--package",
                platform._nextpnr_package_options[platform.package].upper(), "--speed", str(platform.speed))
    else:
        raise LowbitError(f"board {type(platform).__name__} uses {platform.device}, which has no open "
                          "Yosys/nextpnr flow in lowbit", "choose an iCE40 or ECP5 board")
    known = DEVICES.get(_KNOWN_PARTS.get(platform.device, ""))
    capacity = dict(known.capacity) if known else {}
    return Device(known.name if known else _normalise(platform.device), fam, args, capacity)


class BoardTop(Elaboratable):
    """Connects a core's ``rx``/``tx``/``leds`` to a board's UART and LEDs.

    The clock is the platform's default clock (Amaranth creates the ``sync`` domain from it, with a
    power-on reset), or, given a :class:`lowbit.boards.pll.PllPlan`, a PLL's output. If the board has a
    ``uart_tx_enable`` pin (ULX3S), it is driven high.
    """

    def __init__(self, core, pll=None):
        self.pll = pll
        for port in ("rx", "tx"):
            if port not in core.signature.members:
                raise LowbitError(f"core {type(core).__name__} has no {port!r} port",
                                  "a board core needs rx: In(1) and tx: Out(1)")
        self.core = core

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        if self.pll is not None:
            from .pll import PllClock
            m.submodules.clock = PllClock(self.pll)
        try:
            uart = platform.request("uart", 0, dir={"rx": "-", "tx": "-"})
        except ResourceError:
            raise LowbitError(f"board {type(platform).__name__} has no UART resource",
                              "lowbit talks to the accelerator over a UART; pick a board that has one") from None
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buf.i), tx_buf.o.eq(core.tx)]
        try:
            tx_en = platform.request("uart_tx_enable", 0, dir="-")
            m.submodules.tx_en = tx_en_buf = io.Buffer("o", tx_en)
            m.d.comb += tx_en_buf.o.eq(1)
        except ResourceError:
            pass
        if "flash_cs" in core.signature.members:
            # A loadable overlay that boots its model from the configuration flash.
            try:
                flash = platform.request("spi_flash_1x", 0, dir={"cs": "-", "clk": "-", "copi": "-", "cipo": "-",
                                                                  "wp": "-", "hold": "-"})
            except ResourceError:
                raise LowbitError(f"board {type(platform).__name__} has no SPI flash resource (spi_flash_1x)",
                                  "build without flash boot; load the model over the link") from None
            for name, direction, pin in (("cs", "o", flash.cs), ("clk", "o", flash.clk), ("copi", "o", flash.copi),
                                         ("cipo", "i", flash.cipo), ("wp", "o", flash.wp), ("hold", "o", flash.hold)):
                buf = m.submodules[f"flash_{name}"] = io.Buffer(direction, pin)
                if name == "cipo":
                    m.d.comb += core.flash_cipo.eq(buf.i)
                elif name in ("wp", "hold"):
                    m.d.comb += buf.o.eq(0)         # inverted pins: not write-protected, not held
                else:
                    m.d.comb += buf.o.eq(getattr(core, f"flash_{name}"))
        if "leds" in core.signature.members:
            leds = []
            for i in range(len(core.leds)):
                try:
                    leds.append(platform.request("led", i, dir="-"))
                except ResourceError:
                    break
            for i, led in enumerate(leds):
                buf = io.Buffer("o", led)
                m.submodules[f"led_buf{i}"] = buf
                m.d.comb += buf.o.eq(core.leds[i])
        return m


def board_clock(board: str, clock_mhz: float | None = None):
    """``(clk_hz, pll_plan)``: the design clock of ``board``, its oscillator or, when ``clock_mhz``
    differs from it, the frequency a PLL actually makes (with the plan for :class:`BoardTop`)."""
    platform = platform_class(board)()
    osc_hz = platform.default_clk_frequency
    if clock_mhz is None or abs(clock_mhz * 1e6 - osc_hz) < 1:
        return osc_hz, None
    from .pll import pll_plan
    plan = pll_plan(board_device(platform).family, osc_hz / 1e6, clock_mhz)
    return plan.out_mhz * 1e6, plan


def prepare_board(board: str, core_factory, outdir, clock_mhz: float | None = None):
    """Instantiate ``board``'s platform, build the core for its clock and write the design files.

    ``core_factory(clk_hz)`` returns the core; ``clock_mhz`` asks for a PLL clock instead of the
    oscillator. Returns ``(platform, device, files, constraints, clock_mhz)`` where ``files`` are the
    RTLIL netlist and the pin-constraint file written into ``outdir``.
    """
    platform = platform_class(board)()
    dev = board_device(platform)
    clk_hz, plan = board_clock(board, clock_mhz)
    core = core_factory(clk_hz)
    top = BoardTop(core, plan)
    try:
        plan = platform.prepare(top, name="top")
    except LowbitError:
        core._MustUse__silence = top._MustUse__silence = True  # not built because the board is unfit
        raise
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written = {}
    for filename, content in plan.files.items():
        if Path(filename).suffix in (".il", ".pcf", ".lpf"):
            path = outdir / filename
            path.write_text(content if isinstance(content, str) else content.decode())
            written[Path(filename).suffix] = path
    constraints = written.get(".pcf") or written.get(".lpf")
    return platform, dev, [written[".il"]], constraints, clk_hz / 1e6


def build_board(board: str, core_factory, outdir, progress=None, clock_mhz: float | None = None,
                **implement_args):
    """Synthesise, place, route and pack ``core_factory(clk_hz)`` for ``board``; returns the
    :class:`lowbit.sw.flow.synth.ImplementResult` (the design clock is the timing target)."""
    platform, dev, files, constraints, clock_mhz = prepare_board(board, core_factory, outdir, clock_mhz)
    kwargs = dict(implement_args)
    if progress is not None:
        kwargs["progress"] = progress
    return implement(files, "top", dev, outdir, clock_mhz=clock_mhz, constraints=constraints, **kwargs)
