"""The frame handler between the UART and the network (protocol: :mod:`lowbit.sw.link.frames`).

Receive path: hunt for SYNC, read opcode and length, check them, store an INFER payload in the input
buffer, check the CRC. Only a frame whose CRC is good is acted on, so a corrupted request never reaches
the network. Any bad frame is answered with an ERROR frame and the receiver hunts for the next SYNC; a
frame that stops arriving for ``timeout`` cycles is dropped with a TIMEOUT error, so nothing hangs.

Transmit path: builds the response byte by byte and appends its CRC. For INFER the buffered inputs are
fed to the network one code per beat while its outputs (decoupled by a FIFO, so the UART never stalls
the network) are serialised little-endian with an argmax byte after each sample. ``cycles`` counts
from the start of an INFER until the network produced its last output.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.link import frames

__all__ = ["HostLink", "crc16_step"]


def _crc_matrix():
    # CRC-16 without final XOR is linear over GF(2) in (register, byte): evaluate frames.crc16 on each
    # basis vector to find which input bits every output bit is the XOR of.
    taps = [[] for _ in range(16)]
    for i in range(24):
        reg, data = (1 << i, 0) if i < 16 else (0, 1 << (i - 16))
        out = frames.crc16(bytes([data]), reg) ^ frames.crc16(bytes([0]), 0)
        for o in range(16):
            if out >> o & 1:
                taps[o].append(i)
    return taps


_CRC_TAPS = _crc_matrix()


def crc16_step(crc, byte):
    """Amaranth expression: CRC-16/CCITT-FALSE register after one more byte (as ``frames.crc16``)."""
    bits = Cat(crc[:16], byte[:8])
    return Cat(*[_xor(bits[i] for i in taps) for taps in _CRC_TAPS])


def _xor(values):
    values = list(values)
    out = values[0]
    for v in values[1:]:
        out = out ^ v
    return out


class HostLink(wiring.Component):
    """Parameters
    ----------
    identity : frames.Identity
        What IDENTIFY answers (also fixes input/output counts, output bytes and max batch).
    code_shape : Shape
        Shape of one input code (the low bits of each payload byte).
    out_shape : Shape
        Shape of one network output value.
    timeout : int
        Cycles without a byte after which a partial frame is dropped.
    """

    def __init__(self, identity: frames.Identity, code_shape, out_shape, timeout: int):
        self.identity = identity
        self.code_shape = code_shape
        self.out_shape = out_shape
        self.timeout = timeout
        super().__init__({
            "rx_byte": In(stream.Signature(8)),
            "tx_byte": Out(stream.Signature(8)),
            "net_i": Out(stream.Signature(code_shape)),
            "net_o": In(stream.Signature(out_shape)),
            "mac_cycles": In(frames.field_bits(frames.COUNTERS_FIELDS, "mac_cycles")),
            "frames_ok": Out(frames.field_bits(frames.COUNTERS_FIELDS, "frames")),
            "errors": Out(frames.field_bits(frames.COUNTERS_FIELDS, "errors")),
        })

    def elaborate(self, platform):
        m = Module()
        ident = self.identity
        n_in, n_out, nbytes, max_batch = ident.input_count, ident.output_count, ident.output_bytes, ident.max_batch

        # ---- receive -----------------------------------------------------------------------------
        m.submodules.inbuf = inbuf = Memory(shape=unsigned(8), depth=n_in * max_batch, init=[])
        wp = inbuf.write_port()
        rp = inbuf.read_port()
        rx = self.rx_byte
        byte = rx.payload
        busy = Signal()                     # a response is being sent: incoming bytes are ignored
        m.d.comb += rx.ready.eq(1)
        got = rx.valid & ~busy
        crc = Signal(16, init=0xFFFF)
        opcode = Signal(8)
        length = Signal(16)
        count = Signal(16)
        batch = Signal(range(max_batch + 1))
        rx_crc = Signal(8)
        idle_timer = Signal(range(self.timeout + 1))
        # requests to the transmitter
        start = Signal()
        start_kind = Signal(8)              # response opcode
        start_err = Signal(8)

        def fail(code):
            m.d.comb += [start.eq(1), start_kind.eq(frames.ERROR), start_err.eq(code)]
            m.next = "HUNT"

        timed_out = Signal()
        m.d.comb += timed_out.eq((idle_timer == self.timeout) & ~busy)

        with m.FSM(name="rx") as rx_fsm:
            with m.State("HUNT"):
                with m.If(got & (byte == frames.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "OPC"
            with m.State("OPC"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), opcode.eq(byte)]
                    m.next = "LEN0"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("LEN0"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), length[:8].eq(byte)]
                    m.next = "LEN1"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("LEN1"):
                with m.If(got):
                    full_len = Cat(length[:8], byte)
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), length.eq(full_len), count.eq(0)]
                    with m.If((opcode == frames.IDENTIFY) | (opcode == frames.COUNTERS)):
                        with m.If(full_len == 0):
                            m.next = "CRC0"
                        with m.Else():
                            fail(frames.BAD_LENGTH)
                    with m.Elif(opcode == frames.INFER):
                        ok = Const(0, 1)
                        for b in range(1, max_batch + 1):
                            with m.If(full_len == b * n_in):
                                m.d.sync += batch.eq(b)
                            ok = ok | (full_len == b * n_in)
                        with m.If(ok):
                            m.next = "PAYLOAD"
                        with m.Else():
                            fail(frames.BAD_LENGTH)
                    with m.Else():
                        fail(frames.BAD_OPCODE)
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("PAYLOAD"):
                m.d.comb += [wp.addr.eq(count), wp.data.eq(byte), wp.en.eq(got)]
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), count.eq(count + 1)]
                    with m.If(count == length - 1):
                        m.next = "CRC0"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("CRC0"):
                with m.If(got):
                    m.d.sync += rx_crc.eq(byte)
                    m.next = "CRC1"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("CRC1"):
                with m.If(got):
                    with m.If(Cat(rx_crc, byte) == crc):
                        m.d.comb += [start.eq(1), start_kind.eq(opcode | frames.RESPONSE)]
                        m.d.sync += self.frames_ok.eq(self.frames_ok + 1)
                        m.next = "HUNT"
                    with m.Else():
                        fail(frames.BAD_CRC)
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
        # The silence timer runs inside a frame and restarts with every byte.
        with m.If(rx_fsm.ongoing("HUNT") | got):
            m.d.sync += idle_timer.eq(0)
        with m.Elif(~busy & (idle_timer != self.timeout)):
            m.d.sync += idle_timer.eq(idle_timer + 1)
        with m.If(start & (start_kind == frames.ERROR)):
            m.d.sync += self.errors.eq(self.errors + 1)

        # ---- transmit ----------------------------------------------------------------------------
        kind = Signal(8)
        err = Signal(8)
        tx = self.tx_byte
        tx_crc = Signal(16)
        idx = Signal(16)
        plen = Signal(16)
        # The COUNTERS response, little-endian in the order of frames.COUNTERS_FIELDS, each at its width.
        cycles = Signal(frames.field_bits(frames.COUNTERS_FIELDS, "cycles"))
        counter_of = {"cycles": cycles, "mac_cycles": self.mac_cycles, "frames": self.frames_ok,
                      "errors": self.errors}
        counters = Signal(8 * frames.COUNTERS_BYTES)
        counting = Signal()
        ident_bytes = ident.pack()
        ident_rom = Signal(8 * len(ident_bytes), init=int.from_bytes(ident_bytes, "little"))

        # network feed: inputs from the buffer, one code per beat
        feed_left = Signal(range(n_in * max_batch + 1))
        feed_addr = Signal(range(max(n_in * max_batch, 2)))
        fadv = Signal()
        m.d.comb += [fadv.eq(~self.net_i.valid | self.net_i.ready), rp.addr.eq(feed_addr), rp.en.eq(fadv)]
        # The read issued in an advancing cycle delivers its byte in the next one, together with valid.
        with m.If(fadv):
            m.d.sync += self.net_i.valid.eq(feed_left != 0)
            with m.If(feed_left != 0):
                m.d.sync += [feed_addr.eq(feed_addr + 1), feed_left.eq(feed_left - 1)]
        m.d.comb += self.net_i.payload.eq(rp.data[:self.code_shape.width])   # a code is the byte's low bits

        # network outputs decoupled from the UART
        m.submodules.outq = outq = SyncFIFOBuffered(width=self.out_shape.width, depth=n_out * max_batch)
        out_left = Signal(range(n_out * max_batch + 1))
        m.d.comb += [outq.w_data.eq(self.net_o.payload), outq.w_en.eq(self.net_o.valid),
                     self.net_o.ready.eq(outq.w_rdy)]
        with m.If(self.net_o.valid & outq.w_rdy & (out_left != 0)):
            m.d.sync += out_left.eq(out_left - 1)
            with m.If(out_left == 1):
                m.d.sync += counting.eq(0)
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)

        # output value serialiser with argmax
        value = Signal(self.out_shape)
        vbyte = Signal(range(nbytes + 1))
        vcount = Signal(range(n_out + 1))   # values of this sample already loaded
        best = Signal(self.out_shape)
        # Index of the first largest value; frames.Identity refuses more outputs than the argmax byte
        # names, so the register fits it.
        best_i = Signal(range(max(n_out, 2)))
        need_argmax = Signal()

        with m.FSM(name="tx"):
            with m.State("IDLE"):
                m.d.comb += busy.eq(0)
                with m.If(start):
                    m.d.sync += [kind.eq(start_kind), err.eq(start_err), idx.eq(0), tx_crc.eq(0xFFFF)]
                    with m.If(start_kind == (frames.INFER | frames.RESPONSE)):
                        m.d.sync += [plen.eq(batch * ident.infer_record_bytes), feed_addr.eq(0),
                                     feed_left.eq(batch * n_in), out_left.eq(batch * n_out), cycles.eq(0),
                                     counting.eq(1), vbyte.eq(0), vcount.eq(0), need_argmax.eq(0)]
                    with m.Elif(start_kind == (frames.IDENTIFY | frames.RESPONSE)):
                        m.d.sync += plen.eq(len(ident_bytes))
                    with m.Elif(start_kind == (frames.COUNTERS | frames.RESPONSE)):
                        m.d.sync += [plen.eq(frames.COUNTERS_BYTES),
                                     counters.eq(Cat(*(counter_of[f.name] for f in frames.COUNTERS_FIELDS)))]
                    with m.Else():
                        m.d.sync += plen.eq(1)
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [busy.eq(1), tx.valid.eq(1), tx.payload.eq(frames.SYNC)]
                with m.If(tx.ready):
                    m.next = "OPC"
            for state, nxt, val in (("OPC", "LEN0", kind), ("LEN0", "LEN1", plen[:8]), ("LEN1", "BODY", plen[8:])):
                with m.State(state):
                    m.d.comb += [busy.eq(1), tx.valid.eq(1), tx.payload.eq(val)]
                    with m.If(tx.ready):
                        m.d.sync += tx_crc.eq(crc16_step(tx_crc, val))
                        m.next = nxt
            with m.State("BODY"):
                m.d.comb += busy.eq(1)
                with m.If(idx == plen):
                    m.next = "CRC0"
                with m.Elif(kind == (frames.INFER | frames.RESPONSE)):
                    self._infer_bytes(m, tx, tx_crc, idx, outq, value, vbyte, vcount, best, best_i, need_argmax,
                                      n_out, nbytes)
                with m.Else():
                    payload = Signal(8)
                    with m.If(kind == (frames.IDENTIFY | frames.RESPONSE)):
                        m.d.comb += payload.eq(ident_rom.word_select(idx[:max(1, (len(ident_bytes) - 1).bit_length())], 8))
                    with m.Elif(kind == (frames.COUNTERS | frames.RESPONSE)):
                        m.d.comb += payload.eq(counters.word_select(idx[:(frames.COUNTERS_BYTES - 1).bit_length()], 8))
                    with m.Else():
                        m.d.comb += payload.eq(err)
                    m.d.comb += [tx.valid.eq(1), tx.payload.eq(payload)]
                    with m.If(tx.ready):
                        m.d.sync += [tx_crc.eq(crc16_step(tx_crc, payload)), idx.eq(idx + 1)]
            with m.State("CRC0"):
                m.d.comb += [busy.eq(1), tx.valid.eq(1), tx.payload.eq(tx_crc[:8])]
                with m.If(tx.ready):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [busy.eq(1), tx.valid.eq(1), tx.payload.eq(tx_crc[8:])]
                with m.If(tx.ready):
                    m.next = "IDLE"
        return m

    def _infer_bytes(self, m, tx, tx_crc, idx, outq, value, vbyte, vcount, best, best_i, need_argmax, n_out, nbytes):
        # Either emit the pending argmax byte, or a byte of the current value, or load the next value.
        with m.If(need_argmax):
            argmax = Signal(8)          # frames.INFER_FIELDS: the argmax is one byte (ARGMAX_BYTES)
            m.d.comb += [argmax.eq(best_i), tx.valid.eq(1), tx.payload.eq(argmax)]
            with m.If(tx.ready):
                m.d.sync += [tx_crc.eq(crc16_step(tx_crc, argmax)), idx.eq(idx + 1), need_argmax.eq(0), vcount.eq(0)]
        with m.Elif(vbyte != 0):
            # value is sign-extended to whole bytes; byte number (nbytes - vbyte) goes out next.
            wide = Signal(8 * nbytes)
            m.d.comb += wide.eq(value)
            cur = Signal(8)
            for b in range(nbytes):
                with m.If(vbyte == nbytes - b):
                    m.d.comb += cur.eq(wide[8 * b:8 * b + 8])
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(cur)]
            with m.If(tx.ready):
                m.d.sync += [tx_crc.eq(crc16_step(tx_crc, cur)), idx.eq(idx + 1), vbyte.eq(vbyte - 1)]
                with m.If((vbyte == 1) & (vcount == n_out)):
                    m.d.sync += need_argmax.eq(1)
        with m.Else():
            m.d.comb += outq.r_en.eq(1)
            with m.If(outq.r_rdy):
                v = Signal(self.out_shape)
                m.d.comb += v.eq(outq.r_data)
                m.d.sync += [value.eq(v), vbyte.eq(nbytes), vcount.eq(vcount + 1)]
                with m.If((vcount == 0) | (v > best)):
                    m.d.sync += [best.eq(v), best_i.eq(vcount)]
