"""Host driver: one API (:class:`Device`) over any byte transport — a serial port or a simulated board.

A transport has ``write(data: bytes)`` and ``read(max_bytes, timeout_s) -> bytes`` (returning what
arrived within the timeout, possibly nothing). :class:`SerialTransport` wraps pyserial;
:class:`lowbit.sim.board_sim.CocotbTransport` drives the RTL simulation of a board, byte for byte, so
the same :class:`Device` code runs against both (Glasgow's "one host API, two transports").
"""

from __future__ import annotations

import time

import numpy as np

from . import frames
from ..errors import LowbitError

__all__ = ["LinkError", "SerialTransport", "Device"]


class LinkError(LowbitError):
    """The board answered with an ERROR frame, or did not answer in time."""


class SerialTransport:
    """A serial port through pyserial (imported only when used)."""

    def __init__(self, port: str, baud: int):
        try:
            import serial
        except ImportError:
            raise LowbitError("pyserial is not installed", "pip install pyserial") from None
        try:
            self.port = serial.Serial(port, baud, timeout=0)
        except (serial.SerialException, OSError) as exc:
            raise LowbitError(f"cannot open serial port {port}: {exc}",
                              "check the board is plugged in and the port name (e.g. /dev/ttyUSB1)") from None

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self, max_bytes: int, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while True:
            data = self.port.read(max_bytes)
            if data or time.monotonic() >= deadline:
                return data
            time.sleep(0.001)


class Device:
    """Talks to a lowbit board.

    Parameters
    ----------
    transport
        Any object with ``write`` and ``read`` (see the module docstring).
    timeout_s : float
        How long to wait for a response (in the transport's time: wall clock for a serial port,
        simulated time for a simulated board).
    """

    def __init__(self, transport, timeout_s: float = 1.0):
        self.transport = transport
        self.timeout_s = timeout_s
        self.parser = frames.FrameParser()
        self._identity = None

    def request(self, opcode: int, payload: bytes = b"") -> bytes:
        """Send one frame and return the payload of the matching response; LinkError on an ERROR
        frame or silence."""
        self.transport.write(frames.encode_frame(opcode, payload))
        silent = 0.0          # only time without any byte counts towards the timeout
        step = self.timeout_s / 20
        while silent < self.timeout_s:
            data = self.transport.read(4096, step)
            if not data:
                silent += step
                continue
            silent = 0.0
            for op, body in self.parser.feed(data):
                if op == frames.ERROR:
                    code = body[0] if body else 0
                    raise LinkError(f"board reported {frames.ERROR_NAMES.get(code, f'error {code}')}",
                                    "the request was dropped; send it again")
                if op == opcode | frames.RESPONSE:
                    return body
                raise LinkError(f"unexpected response opcode 0x{op:02x} to request 0x{opcode:02x}")
        raise LinkError(f"no response to request 0x{opcode:02x} within {self.timeout_s} s",
                        "check the port, the baud rate and that the bitstream is a lowbit build")

    def identify(self) -> frames.Identity:
        self._identity = frames.Identity.unpack(self.request(frames.IDENTIFY))
        return self._identity

    def read_counters(self) -> dict:
        """The board's counters, keyed by the names of :data:`lowbit.sw.link.frames.COUNTERS_FIELDS`."""
        return frames.unpack_counters(self.request(frames.COUNTERS))

    def _request_retrying(self, opcode: int, payload: bytes, retries: int) -> bytes:
        for attempt in range(retries + 1):
            try:
                return self.request(opcode, payload)
            except LinkError:
                if attempt == retries:
                    raise
        raise AssertionError("unreachable")

    def load(self, spaces: dict, word_bytes: dict, commit: dict, chunk_bytes: int, retries: int = 3,
             progress=None) -> frames.Identity:
        """Load a model into a loadable overlay and commit it; returns the board's new identity.

        ``spaces`` maps each load space (:data:`lowbit.sw.link.frames.SPACES` index) to its bytes (whole
        words of ``word_bytes[space]`` bytes, little-endian), ``commit`` the COMMIT fields (with the
        checksum of those bytes). Chunks of at most ``chunk_bytes`` (whole words) go out one LOAD each;
        a chunk answered with an error or not at all is sent again (LOAD is idempotent) up to
        ``retries`` times. ``progress(done, total)`` hears the bytes sent.
        """
        total = sum(len(data) for data in spaces.values())
        done = 0
        for payload in frames.load_payloads(spaces, word_bytes, chunk_bytes):
            self._request_retrying(frames.LOAD, payload, retries)
            done += len(payload) - frames.LOAD_HEAD_BYTES
            if progress:
                progress(done, total)
        self._request_retrying(frames.COMMIT, frames.pack_commit(commit), retries)
        ident = self.identify()
        if not ident.loaded:
            raise LinkError("the board accepted the model but does not say it is loaded",
                            "this is a lowbit bug: please report it")
        return ident

    def infer(self, codes, batch: int | None = None, retries: int = 2):
        """Run input codes (N, input_count) through the board; returns (values (N, outputs), argmax (N,)).

        A frame answered with an error is sent again up to ``retries`` times.
        """
        ident = self._identity or self.identify()
        if not ident.loaded:
            raise LowbitError("the board holds no model (an overlay whose memories start empty, or a load "
                              "that did not finish)", "load one first: lowbit load BUILD_DIR MODEL")
        codes = np.asarray(codes).reshape(len(codes), -1)
        if codes.shape[1] != ident.input_count:
            raise LowbitError(f"inputs have {codes.shape[1]} codes each, the board expects {ident.input_count}")
        if ident.input_binary:
            codes = (codes > 0).astype(np.int64)
        batch = min(batch or ident.max_batch, ident.max_batch)
        values, argmax = [], []
        for start in range(0, len(codes), batch):
            chunk = codes[start:start + batch]
            for attempt in range(retries + 1):
                try:
                    body = self.request(frames.INFER, frames.pack_inputs(chunk.ravel()))
                    break
                except LinkError:
                    if attempt == retries:
                        raise
            v, a = frames.unpack_outputs(body, len(chunk), ident.output_count, ident.output_bytes,
                                         signed=ident.output_signed)
            values.extend(v)
            argmax.extend(a)
        return np.array(values, dtype=np.int64), np.array(argmax, dtype=np.int64)
