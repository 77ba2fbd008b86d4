"""A loadable overlay board without its UART, for Amaranth-simulator benches of the load path.

:class:`LoadableBoard` wires :class:`lowbit.hw.hostlink.HostLink` (loadable) and
:class:`lowbit.hw.overlay.OverlayEngine` as :class:`lowbit.hw.accel.AccelCore` does, with a
synchronous ``rst`` input that resets the whole board (a power cut: memories keep their contents,
every register starts over). :func:`exchange` sends one frame and returns the response.
"""

from __future__ import annotations

from amaranth import Module, ResetInserter
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from ..hw.accel import load_spec
from ..hw.hostlink import HostLink
from ..hw.overlay import OverlayEngine
from ..sw.link import frames
from .streams import stream_get, stream_put

__all__ = ["LoadableBoard", "exchange", "load_chunks"]


class _Board(wiring.Component):
    def __init__(self, cfg, buffer: int, batch: int, timeout: int):
        self.net = OverlayEngine(cfg, [], [], [])
        self.link = HostLink(None, self.net.i.payload.shape(), self.net.o.payload.shape(), timeout=timeout,
                             load=load_spec(cfg, buffer, 16, batch, None))
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        net, link = self.net, self.link
        m.submodules.link = link
        m.submodules.net = ResetInserter(~link.loaded)(net)
        for name in ("sel", "space", "addr", "lane", "data", "we", "re"):
            m.d.comb += getattr(net, f"ld_{name}").eq(getattr(link, f"ld_{name}"))
        m.d.comb += link.ld_rdata.eq(net.ld_rdata)
        wiring.connect(m, link.net_i, net.i)
        wiring.connect(m, net.o, link.net_o)
        return m


class LoadableBoard(wiring.Component):
    """Parameters: an :class:`~lowbit.hw.overlay.OverlayConfig` (loadable), the input buffer's bytes, the
    largest INFER batch and the link's silence timeout in cycles. ``link`` is the host link (its
    ``rx_byte`` and ``tx_byte`` streams are the bench's)."""

    def __init__(self, cfg, buffer: int, batch: int, timeout: int = 100_000):
        self.board = _Board(cfg, buffer, batch, timeout)
        self.link = self.board.link
        super().__init__({"rst": In(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.board = ResetInserter(self.rst)(self.board)
        return m


async def exchange(ctx, link, frame: bytes, timeout: int = 200_000):
    """Send one frame (the bytes as given) and return the response ``(opcode, payload)``. The response
    waits until read (``tx_byte.ready`` is low outside :func:`stream_get`), so an early ERROR is not lost."""
    await stream_put(ctx, link.rx_byte, list(frame))
    head = await stream_get(ctx, link.tx_byte, frames.HEADER_BYTES, timeout=timeout)
    length = head[2] | head[3] << 8
    rest = await stream_get(ctx, link.tx_byte, length + 2, timeout=timeout)
    (op, body), = frames.FrameParser().feed(bytes(head + rest))
    return op, body


def load_chunks(image, size: int) -> list[bytes]:
    """The LOAD payloads of a :class:`lowbit.sw.flow.overlay.LoadImage`, chunks of at most ``size``
    bytes (whole words), space by space."""
    return frames.load_payloads(image.spaces, image.word_bytes, size)
