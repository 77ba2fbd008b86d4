"""The frame handler between the UART and the network (protocol: :mod:`lowbit.sw.link.frames`).

Receive path: hunt for SYNC, read opcode and length, check them, store an INFER payload in the input
buffer, check the CRC. Only a frame whose CRC is good is acted on, so a corrupted request never reaches
the network. Any bad frame is answered with an ERROR frame and the receiver hunts for the next SYNC; a
frame that stops arriving for ``timeout`` cycles is dropped with a TIMEOUT error, so nothing hangs.

Transmit path: builds the response byte by byte and appends its CRC. For INFER the buffered inputs are
fed to the network one code per beat while its outputs (decoupled by a FIFO, so the UART never stalls
the network) are serialised little-endian with an argmax byte after each sample. ``cycles`` counts
from the start of an INFER until the network produced its last output.

**Loadable** (with a :class:`LoadSpec`, for an overlay): LOAD chunks are staged in the input buffer
and, once their CRC is good and their address range checked, copied word by word through the engine's
load port (the identity space is the link's own memory); an accepted LOAD marks the board empty, which
holds the engine in reset and answers INFER with NOT_LOADED. COMMIT reads every loaded word back, runs
it through CRC-32 and, if that equals the request's checksum, takes the model's input and output
counts, marks the board loaded and lets the engine start from its first layer. IDENTIFY answers the
loaded model's identity record (or the empty one) and the capacity record.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..sw.link import frames

__all__ = ["HostLink", "LoadSpec", "crc16_step", "crc32_step"]


def _crc_taps(register, width: int):
    # A CRC without its final XOR is linear over GF(2) in (register, byte): evaluate the Python
    # function ``register(data, reg)`` on each basis vector to find which input bits every output bit
    # is the XOR of.
    taps = [[] for _ in range(width)]
    for i in range(width + 8):
        reg, data = (1 << i, 0) if i < width else (0, 1 << (i - width))
        out = register(bytes([data]), reg) ^ register(bytes([0]), 0)
        for o in range(width):
            if out >> o & 1:
                taps[o].append(i)
    return taps


def _crc_step(taps, reg, byte):
    bits = Cat(reg[:len(taps)], byte[:8])
    return Cat(*[_xor(bits[i] for i in t) for t in taps])


_CRC16_TAPS = _crc_taps(frames.crc16, 16)
_CRC32_TAPS = _crc_taps(frames.crc32_register, 32)


def crc16_step(crc, byte):
    """Amaranth expression: CRC-16/CCITT-FALSE register after one more byte (as ``frames.crc16``)."""
    return _crc_step(_CRC16_TAPS, crc, byte)


def crc32_step(reg, byte):
    """Amaranth expression: the CRC-32 register after one more byte (as ``frames.crc32_register``)."""
    return _crc_step(_CRC32_TAPS, reg, byte)


@dataclass(frozen=True)
class LoadSpec:
    """What a loadable link serves (built by :class:`lowbit.hw.accel.AccelCore` for an overlay).

    ``word_bits`` and ``depths`` per load space (:data:`lowbit.sw.link.frames.SPACES`; space 0, the
    identity record, is bytes in the link's own memory), ``capacity`` the capacity record (its
    ``loaded`` byte is the live flag), ``input_buffer`` the bytes of the input buffer (an INFER batch;
    LOAD chunks are staged there too, ``capacity["chunk_bytes"]`` at most), ``out_depth`` the output
    FIFO's depth, ``initial`` the identity record and :data:`~lowbit.sw.link.frames.COMMIT_FIELDS` of
    the model the memories hold at power-up (None: they start empty).
    """

    word_bits: tuple
    depths: tuple
    capacity: dict
    input_buffer: int
    out_depth: int
    max_batch: int
    initial: tuple | None = None

    @property
    def word_bytes(self) -> tuple:
        return tuple(frames.value_bytes(b) for b in self.word_bits)

    @property
    def addr_bits(self) -> int:
        """Width of a word address on the load port (the deepest space)."""
        return max(1, max(self.depths).bit_length())

    @property
    def lane_bits(self) -> int:
        """Width of the byte-lane number on the load port (the widest word)."""
        return max(1, (max(self.word_bytes) - 1).bit_length())


def _by_space(space, values, default, first: int = 0):
    """Amaranth value: ``values[space - first]``, or ``default`` for a space outside them."""
    out = default
    for i, value in enumerate(values):
        out = Mux(space == first + i, value, out)
    return out


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
    load : LoadSpec, optional
        Make the link loadable (module docstring); ``identity`` is then not used (the model's identity
        comes with the model) and the link gains the load port ``ld_*`` and ``loaded``.
    """

    def __init__(self, identity: frames.Identity | None, code_shape, out_shape, timeout: int, load: LoadSpec | None = None):
        self.identity = identity
        self.code_shape = code_shape
        self.out_shape = out_shape
        self.timeout = timeout
        self.load = load
        members = {
            "rx_byte": In(stream.Signature(8)),
            "tx_byte": Out(stream.Signature(8)),
            "net_i": Out(stream.Signature(code_shape)),
            "net_o": In(stream.Signature(out_shape)),
            "mac_cycles": In(frames.field_bits(frames.COUNTERS_FIELDS, "mac_cycles")),
            "frames_ok": Out(frames.field_bits(frames.COUNTERS_FIELDS, "frames")),
            "errors": Out(frames.field_bits(frames.COUNTERS_FIELDS, "errors")),
        }
        if load is not None:
            members.update({"ld_sel": Out(1), "ld_space": Out(2), "ld_addr": Out(load.addr_bits),
                            "ld_lane": Out(load.lane_bits), "ld_data": Out(8), "ld_we": Out(1), "ld_re": Out(1),
                            "ld_rdata": In(8), "loaded": Out(1, init=int(load.initial is not None)),
                            "busy": Out(1)})
        super().__init__(members)
        # "A response is being sent" as a register, and the transmitter's state it equals (named here so
        # that sim/formal_hostlink.py can assert they are equal).
        self._busy, self._busy_fsm = Signal(name="busy_r"), Signal(name="busy_fsm")
        # Likewise "the transmitter is in BODY" (one flip-flop, not a decode of the FSM's state bits).
        self._in_body, self._in_body_fsm = Signal(name="in_body"), Signal(name="in_body_fsm")

    def elaborate(self, platform):
        m = Module()
        ident = self.identity
        load = self.load
        if load is None:
            n_in, n_out, nbytes, max_batch = ident.input_count, ident.output_count, ident.output_bytes, ident.max_batch
            buffer_bytes, out_depth, max_nbytes = n_in * max_batch, n_out * max_batch, nbytes
            n_out_v, nbytes_v = Const(n_out, 16), Const(nbytes, 3)
        else:
            # The model's figures are registers, set by COMMIT (or by the model the memories hold).
            init = load.initial[1] if load.initial is not None else {f.name: 0 for f in frames.COMMIT_FIELDS}
            max_batch, buffer_bytes, out_depth = load.max_batch, load.input_buffer, load.out_depth
            max_nbytes = frames.MAX_VALUE_BYTES       # a loaded model's logits are sent in 4 bytes
            n_in_v = Signal(range(buffer_bytes + 1), init=init["input_count"])
            n_out_v = Signal(range(frames.MAX_OUTPUTS + 1), init=init["output_count"])
            nbytes_v = Signal(3, init=init["output_bytes"])
            ident_len = Signal(range(load.depths[0] + 1), init=init["identity_bytes"])
            n_in = n_out = None

        # ---- receive -----------------------------------------------------------------------------
        m.submodules.inbuf = inbuf = Memory(shape=unsigned(8), depth=buffer_bytes, init=[])
        wp = inbuf.write_port()
        rp = inbuf.read_port()
        rx = self.rx_byte
        byte = rx.payload
        busy, busy_fsm = self._busy, self._busy_fsm     # a response is being sent: bytes are ignored
        in_body, in_body_fsm = self._in_body, self._in_body_fsm
        if load is not None:
            m.d.comb += self.busy.eq(busy)
        m.d.comb += rx.ready.eq(1)
        got = rx.valid & ~busy
        crc = Signal(16, init=0xFFFF)
        opcode = Signal(8)
        length = Signal(16)
        count = Signal(16)
        batch = Signal(range(max_batch + 1) if load is None else 16)
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
        # at_timeout == (idle_timer == timeout), kept as a register computed from the timer's next value
        # (the compare into the receiver's failure path was an 8x8 4-bit board's critical path at 40.5 MHz).
        at_timeout = Signal(name="at_timeout", init=self.timeout == 0)
        m.d.comb += timed_out.eq(at_timeout & ~busy)
        if load is not None:
            # INFER: inputs counted as they arrive; LOAD: the space, address, and whole words; COMMIT: its fields.
            in_cnt = Signal(range(buffer_bytes + 1))
            plen_acc = Signal(16)
            outl_acc = Signal(16)
            ld_space = Signal(8)
            ld_addr = Signal(load.addr_bits + 1)
            wbc = Signal(range(max(load.word_bytes) + 1))
            words = Signal(range(load.capacity["chunk_bytes"] + 1))
            over = Signal()                 # a LOAD address or COMMIT field wider than its register
            commit = self._commit_regs(buffer_bytes)
            record_bytes = Signal(16)
            m.d.comb += record_bytes.eq(Mux(nbytes_v == 4, n_out_v << 2, Mux(nbytes_v == 2, n_out_v << 1,
                                        Mux(nbytes_v == 3, (n_out_v << 1) + n_out_v, n_out_v))) + frames.ARGMAX_BYTES)
            self._load_regs = dict(in_cnt=in_cnt, plen_acc=plen_acc, outl_acc=outl_acc, ld_space=ld_space,
                                   ld_addr=ld_addr, wbc=wbc, words=words, commit=commit, n_in=n_in_v,
                                   n_out=n_out_v, record_bytes=record_bytes, over=over)

        # LEN1 decides on the length as its high byte arrives. Its decisions start at registers: the
        # opcode's kind, set as the opcode arrives, and the low byte's compares against each constant the
        # length is checked against, set as that byte arrives; LEN1 compares only the high byte (16-bit
        # compares on the live byte, through the failure's code into the transmitter's request, were the
        # 40.5 MHz critical path of 4-bit 8x8 and 16x2 and 2-bit 16x8 boards). Same decisions, same cycles.
        op_codes = {"short": (frames.IDENTIFY, frames.COUNTERS), "infer": (frames.INFER,)}
        if load is not None:
            op_codes.update(load=(frames.LOAD,), commit=(frames.COMMIT,))
        op = {kind: Signal(name=f"op_{kind}") for kind in op_codes}
        consts = [("==", 0)]
        if load is None:
            consts += [("==", b * n_in) for b in range(1, max_batch + 1)]
        else:
            consts += [("<=", buffer_bytes), ("<=", frames.LOAD_HEAD_BYTES),
                       ("<=", frames.LOAD_HEAD_BYTES + load.capacity["chunk_bytes"]), ("==", frames.COMMIT_BYTES)]
        cmp = {"==": lambda a, c: a == c, "<=": lambda a, c: a <= c}
        len_flags = {(rel, c): Signal(name=f"len_lo_{'eq' if rel == '==' else 'le'}_{c}") for rel, c in consts}

        def len_is(rel, c):
            """The received length (low byte in length[:8], high byte `byte` arriving) ``rel`` c."""
            lo = len_flags[(rel, c)]
            hi_c = c >> 8
            if hi_c > 0xFF:
                return Const(rel == "<=", 1)
            if rel == "==" or hi_c == 0:
                return lo & (byte == hi_c)
            return (byte < hi_c) | ((byte == hi_c) & lo)

        # Payload bytes still to come after this one: a down-counter, so the last byte is a zero test, not
        # count == length - 1 (a subtract and a compare, a UP5K board's 33 MHz critical path).
        rem = Signal(16)
        with m.FSM(name="rx") as rx_fsm:
            with m.State("HUNT"):
                with m.If(got & (byte == frames.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.next = "OPC"
            with m.State("OPC"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), opcode.eq(byte)] + [
                        op[kind].eq(byte.matches(*codes)) for kind, codes in op_codes.items()]
                    m.next = "LEN0"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("LEN0"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), length[:8].eq(byte)] + [
                        flag.eq(cmp[rel](byte, c & 0xFF)) for (rel, c), flag in len_flags.items()]
                    m.next = "LEN1"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("LEN1"):
                with m.If(got):
                    full_len = Cat(length[:8], byte)
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), length.eq(full_len), count.eq(0), rem.eq(full_len - 1)]
                    with m.If(op["short"]):
                        with m.If(len_is("==", 0)):
                            m.next = "CRC0"
                        with m.Else():
                            fail(frames.BAD_LENGTH)
                    with m.Elif(op["infer"]):
                        if load is None:
                            ok = Const(0, 1)
                            for b in range(1, max_batch + 1):
                                with m.If(len_is("==", b * n_in)):
                                    m.d.sync += batch.eq(b)
                                ok = ok | len_is("==", b * n_in)
                        else:
                            # Whole inputs are counted as they arrive (n_in is a register).
                            ok = ~len_is("==", 0) & len_is("<=", buffer_bytes)
                            m.d.sync += [batch.eq(0), in_cnt.eq(0), plen_acc.eq(0), outl_acc.eq(0)]
                        with m.If(ok):
                            m.next = "PAYLOAD"
                        with m.Else():
                            fail(frames.BAD_LENGTH)
                    if load is not None:
                        with m.Elif(op["load"]):
                            with m.If(~len_is("<=", frames.LOAD_HEAD_BYTES) &
                                      len_is("<=", frames.LOAD_HEAD_BYTES + load.capacity["chunk_bytes"])):
                                m.d.sync += [wbc.eq(0), words.eq(0), over.eq(0), ld_addr.eq(0)]
                                m.next = "PAYLOAD"
                            with m.Else():
                                fail(frames.BAD_LENGTH)
                        with m.Elif(op["commit"]):
                            with m.If(len_is("==", frames.COMMIT_BYTES)):
                                m.d.sync += [over.eq(0)] + [reg.eq(0) for reg in commit.values()]
                                m.next = "PAYLOAD"
                            with m.Else():
                                fail(frames.BAD_LENGTH)
                    with m.Else():
                        fail(frames.BAD_OPCODE)
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
            with m.State("PAYLOAD"):
                m.d.comb += [wp.addr.eq(count), wp.data.eq(byte), wp.en.eq(got)]
                if load is not None:
                    self._payload_loadable(m, got, byte, opcode, count, wp, batch)
                with m.If(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), count.eq(count + 1), rem.eq(rem - 1)]
                    with m.If(rem == 0):
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
                    with m.If(Cat(rx_crc, byte) != crc):
                        fail(frames.BAD_CRC)
                    if load is not None:
                        # Checks that need the whole (good) frame: a loaded model, whole inputs, a LOAD
                        # inside its space.
                        depth = _by_space(ld_space, load.depths, Const(0, ld_addr.shape().width))
                        in_space = (ld_space < len(load.depths)) & ~over & (ld_addr + words <= depth)
                        with m.Elif((opcode == frames.INFER) & ~self.loaded):
                            fail(frames.NOT_LOADED)
                        with m.Elif((opcode == frames.INFER) & ((in_cnt != 0) | (batch > max_batch))):
                            fail(frames.BAD_LENGTH)
                        with m.Elif((opcode == frames.LOAD) & ((wbc != 0) | ~in_space)):
                            fail(frames.BAD_ADDRESS)
                        with m.Elif((opcode == frames.COMMIT) & (over | ~self._commit_ok(commit, buffer_bytes))):
                            fail(frames.BAD_LENGTH)
                    with m.Else():
                        m.d.comb += [start.eq(1), start_kind.eq(opcode | frames.RESPONSE)]
                        if load is not None:
                            with m.If((opcode == frames.LOAD) | (opcode == frames.COMMIT)):
                                m.d.sync += self.loaded.eq(0)     # empty until a good COMMIT
                        m.next = "HUNT"
                with m.Elif(timed_out):
                    fail(frames.TIMEOUT)
        # The silence timer runs inside a frame and restarts with every byte.
        with m.If(rx_fsm.ongoing("HUNT") | got):
            m.d.sync += [idle_timer.eq(0), at_timeout.eq(self.timeout == 0)]
        with m.Elif(~busy & (idle_timer != self.timeout)):
            m.d.sync += [idle_timer.eq(idle_timer + 1), at_timeout.eq(idle_timer == self.timeout - 1)]
        # The transmitter takes a request the cycle after the receiver makes it: decoding a frame's last
        # byte (CRC, opcode, length) and the loads the request sets off are then separate paths. Together
        # they were a whole-board critical path on a UP5K (rx byte -> start -> the response length and
        # counter enables: 29.1 MHz, an 8x4 4-bit overlay at 30 MHz). The link is busy while a request
        # waits (the flash boot feeds a byte a cycle whenever it is not), and the frame counters advance
        # as the transmitter takes it, so a COUNTERS answer counts the frames before its own.
        tx_start, tx_kind, tx_err = Signal(), Signal(8), Signal(8)
        m.d.sync += [tx_start.eq(start), tx_kind.eq(start_kind), tx_err.eq(start_err)]
        with m.If(tx_start):
            with m.If(tx_kind == frames.ERROR):
                m.d.sync += self.errors.eq(self.errors + 1)
            with m.Else():
                m.d.sync += self.frames_ok.eq(self.frames_ok + 1)

        # ---- transmit ----------------------------------------------------------------------------
        kind = Signal(8)
        err = Signal(8)
        # The transmitter's bytes leave through a one-byte register: tx_byte's valid and payload are
        # flip-flops, and the response FSM's ready is the register being empty (a flip-flop), so the
        # FSM's choice of byte and its handshake end at this register, next to it, instead of at the
        # UART's holding register (an 8x8 4-bit board's critical path at 40.5 MHz, 29.4-34.9 MHz with
        # long routes to the UART). At most a byte every two cycles; the UART takes one every ten bit times.
        tx = SimpleNamespace(valid=Signal(name="txq_valid"), ready=Signal(name="txq_ready"),
                             payload=Signal(8, name="txq_payload"))
        txq_full, txq_byte = Signal(name="txq_full"), Signal(8, name="txq_byte")
        m.d.comb += [tx.ready.eq(~txq_full), self.tx_byte.valid.eq(txq_full), self.tx_byte.payload.eq(txq_byte)]
        with m.If(self.tx_byte.valid & self.tx_byte.ready):
            m.d.sync += txq_full.eq(0)
        with m.If(tx.valid & tx.ready):
            m.d.sync += [txq_full.eq(1), txq_byte.eq(tx.payload)]
        tx_crc = Signal(16)
        # A byte the transmitter takes enters the CRC the cycle after (on a UP5K the payload select and
        # the CRC step in one cycle were the 8x8 4-bit board's 32 MHz critical path). CRC0 follows a
        # BODY cycle that sends nothing, so the last byte is in by then; CRC0 also waits for it.
        crc_byte, crc_go = Signal(8, name="crc_byte"), Signal(name="crc_go")

        def crc_add(byte):
            return [crc_byte.eq(byte), crc_go.eq(1)]

        idx = Signal(16)
        plen = Signal(16)
        # The COUNTERS response, little-endian in the order of frames.COUNTERS_FIELDS, each at its width.
        cycles = Signal(frames.field_bits(frames.COUNTERS_FIELDS, "cycles"))
        counter_of = {"cycles": cycles, "mac_cycles": self.mac_cycles, "frames": self.frames_ok,
                      "errors": self.errors}
        counters = Signal(8 * frames.COUNTERS_BYTES)
        counting = Signal()
        if load is None:
            ident_bytes = ident.pack()
            ident_rom = Signal(8 * len(ident_bytes), init=int.from_bytes(ident_bytes, "little"))

        # network feed: inputs from the buffer, one code per beat
        feed_left = Signal(range(buffer_bytes + 1))
        feed_addr = Signal(range(max(buffer_bytes, 2)))
        fadv = Signal()
        m.d.comb += [fadv.eq(~self.net_i.valid | self.net_i.ready), rp.addr.eq(feed_addr), rp.en.eq(fadv)]
        # The read issued in an advancing cycle delivers its byte in the next one, together with valid.
        with m.If(fadv):
            m.d.sync += self.net_i.valid.eq(feed_left != 0)
            with m.If(feed_left != 0):
                m.d.sync += [feed_addr.eq(feed_addr + 1), feed_left.eq(feed_left - 1)]
        m.d.comb += self.net_i.payload.eq(rp.data[:self.code_shape.width])   # a code is the byte's low bits

        # network outputs decoupled from the UART
        # The network's ready is a flip-flop, "room for one more" as of the cycle before (one entry more
        # than out_depth keeps it exact): the FIFO's level compare into the overlay's requantizer enable
        # was an 8x8 4-bit board's critical path at 40.5 MHz.
        m.submodules.outq = outq = SyncFIFOBuffered(width=self.out_shape.width, depth=out_depth + 1)
        out_left = Signal(range(out_depth + 1) if load is None else 16)
        room = Signal(name="out_room")
        m.d.sync += room.eq(outq.level < out_depth)
        m.d.comb += [outq.w_data.eq(self.net_o.payload), outq.w_en.eq(self.net_o.valid & room),
                     self.net_o.ready.eq(room)]
        # The next value to send, read out of the FIFO ahead whenever this register is empty: the FIFO's
        # read enable then depends on one flip-flop, not on the transmitter's state (on a UP5K that was
        # the 8x8 4-bit board's 35 MHz critical path).
        next_v, next_valid = Signal(self.out_shape, name="next_value"), Signal(name="next_valid")
        m.d.comb += outq.r_en.eq(~next_valid)
        with m.If(~next_valid & outq.r_rdy):
            m.d.sync += [next_v.eq(outq.r_data), next_valid.eq(1)]
        with m.If(self.net_o.valid & room & (out_left != 0)):
            m.d.sync += out_left.eq(out_left - 1)
            with m.If(out_left == 1):
                m.d.sync += counting.eq(0)
        with m.If(counting):
            m.d.sync += cycles.eq(cycles + 1)

        # output value serialiser with argmax
        value = Signal(self.out_shape)
        vshift = Signal(8 * max_nbytes)     # value's bytes still to send, the next in the low byte
        vbyte = Signal(range(max_nbytes + 1))
        vcount = Signal(range(n_out + 1) if load is None else 16)     # values of this sample already loaded
        best = Signal(self.out_shape)
        # Index of the first largest value; frames.Identity refuses more outputs than the argmax byte
        # names, so the register fits it.
        best_i = Signal(range(max(n_out, 2)) if load is None else 8 * frames.ARGMAX_BYTES)
        need_argmax = Signal()
        compare = Signal()              # value was just loaded: the argmax compares it next
        if load is not None:
            loader = self._loader(m, rp, length, idx, ident_len, nbytes_v)

        body_end = Signal()
        # The response kind as flags, set with kind: the byte to send is then chosen without compares.
        is_infer, is_ident, is_counters = Signal(name="is_infer"), Signal(name="is_ident"), Signal(name="is_counters")
        m.d.sync += [crc_go.eq(0), body_end.eq(idx == plen)]
        # The next body byte, chosen a cycle ahead from registers: every byte BODY sends follows a cycle that
        # sends nothing (crc_go after a byte, `settle` after the next value is loaded), in which the
        # registers it is chosen from hold their new values. (The choice in the cycle it was sent, into the
        # UART's holding register, was the 8x8 4-bit board's critical path at 40.5 MHz.)
        body_byte, settle = Signal(8, name="body_byte"), Signal(name="settle")
        m.d.sync += settle.eq(0)
        if load is None:
            ident_byte = ident_rom.word_select(idx[:max(1, (len(ident_bytes) - 1).bit_length())], 8)
        else:
            # The identity memory answers the address of this byte (module docstring).
            ident_byte = Mux(idx == loader["head_len"] + 1, self.loaded, loader["ident_r"].data)
        m.d.sync += body_byte.eq(Mux(is_infer, Mux(need_argmax, best_i, vshift[:8]),
                                     Mux(is_ident, ident_byte, Mux(is_counters, counters[:8], err))))
        with m.If(crc_go):
            m.d.sync += tx_crc.eq(crc16_step(tx_crc, crc_byte))
        with m.FSM(name="tx") as tx_fsm:
            with m.State("IDLE"):
                m.d.comb += busy_fsm.eq(tx_start)
                with m.If(tx_start):
                    m.d.sync += [kind.eq(tx_kind), err.eq(tx_err), idx.eq(0), tx_crc.eq(0xFFFF),
                                 is_infer.eq(tx_kind == (frames.INFER | frames.RESPONSE)),
                                 is_ident.eq(tx_kind == (frames.IDENTIFY | frames.RESPONSE)),
                                 is_counters.eq(tx_kind == (frames.COUNTERS | frames.RESPONSE))]
                    with m.If(tx_kind == (frames.INFER | frames.RESPONSE)):
                        m.d.sync += [feed_addr.eq(0), cycles.eq(0),
                                     counting.eq(1), vbyte.eq(0), vcount.eq(0), need_argmax.eq(0)]
                        if load is None:
                            m.d.sync += [plen.eq(batch * ident.infer_record_bytes), feed_left.eq(batch * n_in),
                                         out_left.eq(batch * n_out)]
                        else:
                            r = self._load_regs
                            m.d.sync += [plen.eq(r["plen_acc"]), feed_left.eq(length), out_left.eq(r["outl_acc"])]
                    with m.Elif(tx_kind == (frames.IDENTIFY | frames.RESPONSE)):
                        if load is None:
                            m.d.sync += plen.eq(len(ident_bytes))
                        else:
                            m.d.sync += plen.eq(loader["head_len"] + frames.CAPACITY_BYTES)
                    if load is not None:
                        with m.Elif(tx_kind == (frames.LOAD | frames.RESPONSE)):
                            m.d.sync += [plen.eq(0), loader["copy_i"].eq(0), loader["copy_w"].eq(0),
                                         loader["copy_b"].eq(0), loader["copy_v"].eq(0)]
                            m.next = "COPY"
                        with m.Elif(tx_kind == (frames.COMMIT | frames.RESPONSE)):
                            m.d.sync += [plen.eq(0), loader["ck_space"].eq(0), loader["ck_word"].eq(0),
                                         loader["ck_lane"].eq(0), loader["ck_crc"].eq(0xFFFFFFFF)]
                            m.next = "CK_ISSUE"
                    with m.Elif(tx_kind == (frames.COUNTERS | frames.RESPONSE)):
                        m.d.sync += [plen.eq(frames.COUNTERS_BYTES),
                                     counters.eq(Cat(*(counter_of[f.name] for f in frames.COUNTERS_FIELDS)))]
                    with m.Else():
                        m.d.sync += plen.eq(1)
                    if load is None:
                        m.next = "SYNC"
                    else:
                        with m.If((tx_kind != (frames.LOAD | frames.RESPONSE)) &
                                  (tx_kind != (frames.COMMIT | frames.RESPONSE))):
                            m.next = "SYNC"
            if load is not None:
                self._loader_states(m, busy_fsm, loader, kind, err, plen)
            with m.State("SYNC"):
                m.d.comb += [busy_fsm.eq(1), tx.valid.eq(1), tx.payload.eq(frames.SYNC)]
                with m.If(tx.ready):
                    m.next = "OPC"
            for state, nxt, val in (("OPC", "LEN0", kind), ("LEN0", "LEN1", plen[:8]), ("LEN1", "BODY", plen[8:])):
                with m.State(state):
                    m.d.comb += [busy_fsm.eq(1), tx.valid.eq(1), tx.payload.eq(val)]
                    with m.If(tx.ready):
                        m.d.sync += crc_add(val)
                        if nxt == "BODY":
                            m.d.sync += in_body.eq(1)
                        m.next = nxt
            with m.State("BODY"):
                m.d.comb += [busy_fsm.eq(1), in_body_fsm.eq(1)]
                with m.If(~(crc_go | settle) & body_end):
                    m.d.sync += in_body.eq(0)
                    m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [busy_fsm.eq(1), tx.valid.eq(~crc_go), tx.payload.eq(tx_crc[:8])]
                with m.If(tx.ready & ~crc_go):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [busy_fsm.eq(1), tx.valid.eq(1), tx.payload.eq(tx_crc[8:])]
                with m.If(tx.ready):
                    m.next = "IDLE"
        # BODY's bytes, outside the FSM: their enables start at in_body, a flip-flop (from the FSM's state
        # bits through the turn's conditions to the value registers' enables was seven LUTs, an 8x8 4-bit
        # board's critical path at 40.5 MHz). After each byte the transmitter takes, one cycle with
        # nothing sent, so body_end (idx == plen a cycle late, off the UART's path) has seen the new idx.
        # A cycle in a byte's ten bit times.
        body_turn = Signal(name="body_turn")
        m.d.comb += body_turn.eq(in_body & ~crc_go & ~settle & ~body_end)
        with m.If(body_turn & is_infer):
            self._infer_bytes(m, tx, crc_add, idx, (next_v, next_valid), value, vshift, vbyte, vcount, best,
                              best_i, need_argmax, compare, n_out_v, nbytes_v, body_byte, settle)
        with m.Elif(body_turn):
            if load is not None:
                with m.If(tx.ready):
                    m.d.comb += loader["ident_idx"].eq(idx + 1)
            with m.If(is_counters & tx.ready):
                m.d.sync += counters.eq(counters >> 8)
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(body_byte)]
            with m.If(tx.ready):
                m.d.sync += [*crc_add(body_byte), idx.eq(idx + 1)]
        # busy_fsm is the transmitter out of IDLE or a request waiting for it. busy is the same as a
        # flip-flop (from busy_fsm, the receiver's choice of what to do with a byte was an 8x8 4-bit board's
        # critical path at 40.5 MHz): a request is made only when the link is not busy, and the one way
        # back to IDLE is CRC1 sending its byte, when no request can be waiting.
        with m.If(busy):
            with m.If(tx_fsm.ongoing("CRC1") & tx.ready):
                m.d.sync += busy.eq(0)
        with m.Else():
            m.d.sync += busy.eq(start)
        # The argmax compares a value the cycle after it is loaded (value number vcount - 1), not as it
        # leaves the output FIFO: on a UP5K the FIFO read -> compare -> enable was a 30 MHz critical path.
        # Its first byte goes out in that cycle at the earliest, so the argmax byte always sees the result.
        # The compare's result is registered and taken the cycle after (the compare into best's enable was
        # an 8x8 4-bit board's critical path at 40.5 MHz); the next value is loaded 4 cycles after this one
        # at the earliest, and the argmax byte is chosen later still.
        took, greater = Signal(name="argmax_take"), Signal(name="argmax_greater")
        m.d.sync += took.eq(compare)
        with m.If(compare):
            m.d.sync += [compare.eq(0), greater.eq((vcount == 1) | (value > best))]
        with m.If(took & greater):
            m.d.sync += [best.eq(value), best_i.eq(vcount - 1)]
        return m

    def _infer_bytes(self, m, tx, crc_add, idx, prefetched, value, vshift, vbyte, vcount, best, best_i, need_argmax,
                     compare, n_out, nbytes, body_byte, settle):
        # Either emit the pending argmax byte (frames.INFER_FIELDS: one byte, ARGMAX_BYTES), or a byte of the
        # current value (sign-extended to whole bytes, shifted a byte on after each: little-endian), or load
        # the next value; body_byte is the argmax or vshift's low byte, chosen the cycle before.
        with m.If(need_argmax):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(body_byte)]
            with m.If(tx.ready):
                m.d.sync += [*crc_add(body_byte), idx.eq(idx + 1), need_argmax.eq(0), vcount.eq(0)]
        with m.Elif(vbyte != 0):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(body_byte)]
            with m.If(tx.ready):
                m.d.sync += [*crc_add(body_byte), idx.eq(idx + 1), vbyte.eq(vbyte - 1), vshift.eq(vshift >> 8)]
                with m.If((vbyte == 1) & (vcount == n_out)):
                    m.d.sync += need_argmax.eq(1)
        with m.Else():
            next_v, next_valid = prefetched
            with m.If(next_valid):
                m.d.sync += [value.eq(next_v), vshift.eq(next_v), vbyte.eq(nbytes), next_valid.eq(0),
                             vcount.eq(vcount + 1), compare.eq(1), settle.eq(1)]

    # -- loadable link (an overlay's) ---------------------------------------------------------------

    def _word_bytes(self, space):
        """Bytes per word of load space ``space`` (an Amaranth value)."""
        return _by_space(space, self.load.word_bytes, Const(1, 8))

    def _commit_regs(self, buffer_bytes) -> dict:
        """One register per COMMIT field, each as wide as the largest value the board can take (a
        wider value sets ``over``, which refuses the COMMIT)."""
        load = self.load
        widths = {"identity_bytes": load.depths[0], "program_words": load.depths[1], "weight_words": load.depths[2],
                  "param_words": load.depths[3], "input_count": buffer_bytes, "output_count": frames.MAX_OUTPUTS,
                  "output_bytes": frames.MAX_VALUE_BYTES}
        regs = {name: Signal(range(top + 1), name=f"commit_{name}") for name, top in widths.items()}
        regs["checksum"] = Signal(32, name="commit_checksum")
        return regs

    def _steer(self, m, count, byte, base, size, reg, over):
        """Byte ``count - base`` of a little-endian field of ``size`` bytes into ``reg``; a set bit past
        ``reg``'s width sets ``over``."""
        width = len(reg)
        # Request headers are short: compare the low bits of the byte count once it is known small.
        low = max(1, (base + size).bit_length())
        small = count[low:] == 0
        for i in range(size):
            with m.If(small & (count[:low] == base + i)):
                if 8 * i < width:
                    hi = min(8, width - 8 * i)
                    m.d.sync += reg[8 * i:8 * i + hi].eq(byte[:hi])
                    if hi < 8:
                        with m.If(byte[hi:] != 0):
                            m.d.sync += over.eq(1)
                else:
                    with m.If(byte != 0):
                        m.d.sync += over.eq(1)

    def _commit_ok(self, commit, buffer_bytes):
        """COMMIT fields a board can run (a checksum alone would let a wrong length hang the check):
        each space's length within it (the registers' widths hold each depth; ``over`` the rest),
        inputs that fit the buffer, outputs the response can carry."""
        load = self.load
        return ((commit["identity_bytes"] <= load.depths[0]) & (commit["identity_bytes"] > frames.IDENTIFY_HEAD_BYTES)
                & (commit["program_words"] <= load.depths[1]) & (commit["program_words"] != 0)
                & (commit["weight_words"] <= load.depths[2]) & (commit["param_words"] <= load.depths[3])
                & (commit["input_count"] != 0) & (commit["input_count"] <= buffer_bytes)
                & (commit["output_count"] != 0) & (commit["output_count"] <= frames.MAX_OUTPUTS)
                & (commit["output_bytes"] != 0) & (commit["output_bytes"] <= frames.MAX_VALUE_BYTES))

    def _payload_loadable(self, m, got, byte, opcode, count, wp, batch):
        r = self._load_regs
        with m.If(opcode == frames.INFER):
            with m.If(got):
                with m.If(r["in_cnt"] == r["n_in"] - 1):
                    m.d.sync += [r["in_cnt"].eq(0), batch.eq(batch + 1),
                                 r["plen_acc"].eq(r["plen_acc"] + r["record_bytes"]),
                                 r["outl_acc"].eq(r["outl_acc"] + r["n_out"])]
                with m.Else():
                    m.d.sync += r["in_cnt"].eq(r["in_cnt"] + 1)
        with m.Elif(opcode == frames.LOAD):
            head = frames.LOAD_HEAD_BYTES
            m.d.comb += [wp.addr.eq(count - head), wp.en.eq(got & (count >= head))]
            with m.If(got):
                (_, _, _), (_, addr_at, addr_size) = frames.field_layout(frames.LOAD_FIELDS)
                with m.If(count == 0):
                    m.d.sync += r["ld_space"].eq(byte)
                self._steer(m, count, byte, addr_at, addr_size, r["ld_addr"], r["over"])
                with m.If(count >= head):
                    with m.If(r["wbc"] == self._word_bytes(r["ld_space"]) - 1):
                        m.d.sync += [r["wbc"].eq(0), r["words"].eq(r["words"] + 1)]
                    with m.Else():
                        m.d.sync += r["wbc"].eq(r["wbc"] + 1)
        with m.Elif(opcode == frames.COMMIT):
            m.d.comb += wp.en.eq(0)
            with m.If(got):
                for name, offset, size in frames.field_layout(frames.COMMIT_FIELDS):
                    self._steer(m, count, byte, offset, size, r["commit"][name], r["over"])

    def _loader(self, m, rp, length, idx, ident_len, nbytes_v):
        """The identity memory and the registers of COPY and the COMMIT check."""
        load = self.load
        ident_depth = load.depths[0]
        empty = frames.EMPTY_IDENTITY.pack_model()
        empty_base, cap_base = ident_depth, ident_depth + len(empty)
        initial = load.initial[0] if load.initial is not None else b""
        if len(initial) > ident_depth:
            raise ValueError(f"an identity of {len(initial)} bytes does not fit {ident_depth}")
        cap = frames.pack_capacity({**load.capacity, "loaded": 0})
        contents = list(initial) + [0] * (ident_depth - len(initial)) + list(empty) + list(cap)
        m.submodules.ident = mem = Memory(shape=unsigned(8), depth=len(contents), init=contents)
        ident_w, ident_r = mem.write_port(), mem.read_port()
        head_len = Signal(range(ident_depth + 1))
        ident_idx = Signal(range(len(contents) + 1))
        m.d.comb += [head_len.eq(Mux(self.loaded, ident_len, len(empty))), ident_idx.eq(idx),
                     ident_r.addr.eq(Mux(ident_idx < head_len, Mux(self.loaded, ident_idx, empty_base + ident_idx),
                                         cap_base + ident_idx - head_len)), ident_r.en.eq(1),
                     self.ld_sel.eq(~self.loaded)]
        chunk = load.capacity["chunk_bytes"]
        return dict(ident_w=ident_w, ident_r=ident_r, head_len=head_len, ident_idx=ident_idx, rp=rp,
                    length=length, ident_len=ident_len, nbytes=nbytes_v,
                    copy_i=Signal(range(chunk + 1)), copy_w=Signal(range(chunk + 1)),
                    copy_b=Signal(load.lane_bits), copy_v=Signal(),
                    ck_space=Signal(2), ck_word=Signal(range(max(load.depths) + 1)), ck_lane=Signal(load.lane_bits),
                    ck_crc=Signal(32))

    def _loader_states(self, m, busy_fsm, x, kind, err, plen):
        r = self._load_regs
        wb = self._word_bytes(r["ld_space"])
        with m.State("COPY"):
            # Staged bytes out of the input buffer (one read a cycle, the byte the cycle after), each
            # written into its byte lane of its word.
            rp = x["rp"]
            nb = x["length"] - frames.LOAD_HEAD_BYTES
            m.d.comb += [busy_fsm.eq(1), rp.addr.eq(x["copy_i"]), rp.en.eq(1)]
            m.d.sync += x["copy_v"].eq(x["copy_i"] < nb)
            with m.If(x["copy_i"] < nb):
                m.d.sync += x["copy_i"].eq(x["copy_i"] + 1)
            with m.If(x["copy_v"]):
                addr = r["ld_addr"] + x["copy_w"]
                with m.If(r["ld_space"] == 0):
                    m.d.comb += [x["ident_w"].addr.eq(addr), x["ident_w"].data.eq(rp.data), x["ident_w"].en.eq(1)]
                with m.Else():
                    m.d.comb += [self.ld_space.eq(r["ld_space"]), self.ld_addr.eq(addr), self.ld_lane.eq(x["copy_b"]),
                                 self.ld_data.eq(rp.data), self.ld_we.eq(1)]
                with m.If(x["copy_b"] == wb - 1):
                    m.d.sync += [x["copy_w"].eq(x["copy_w"] + 1), x["copy_b"].eq(0)]
                with m.Else():
                    m.d.sync += x["copy_b"].eq(x["copy_b"] + 1)
            with m.Elif(x["copy_i"] == nb):
                m.next = "SYNC"
        commit = r["commit"]
        lengths = [commit["identity_bytes"], commit["program_words"], commit["weight_words"], commit["param_words"]]
        cur_len = _by_space(x["ck_space"], lengths[1:], lengths[0], first=1)
        ck_wb = self._word_bytes(x["ck_space"])
        # The word being checked stays addressed (the memories hold their read data meanwhile).
        with m.State("CK_ISSUE"):
            # Every loaded word, read back in space order, each little-endian through CRC-32.
            m.d.comb += busy_fsm.eq(1)
            with m.If(x["ck_word"] == cur_len):
                m.d.sync += [x["ck_word"].eq(0), x["ck_space"].eq(x["ck_space"] + 1)]
                with m.If(x["ck_space"] == 3):
                    m.next = "CK_DONE"
            with m.Else():
                m.d.comb += [x["ident_r"].addr.eq(x["ck_word"]), self.ld_re.eq(x["ck_space"] != 0),
                             self.ld_space.eq(x["ck_space"]), self.ld_addr.eq(x["ck_word"])]
                m.next = "CK_BYTES"
        with m.State("CK_BYTES"):
            byte = Mux(x["ck_space"] == 0, x["ident_r"].data, self.ld_rdata)
            m.d.comb += [busy_fsm.eq(1), x["ident_r"].addr.eq(x["ck_word"]), self.ld_space.eq(x["ck_space"]),
                         self.ld_lane.eq(x["ck_lane"])]
            m.d.sync += [x["ck_crc"].eq(crc32_step(x["ck_crc"], byte)), x["ck_lane"].eq(x["ck_lane"] + 1)]
            with m.If(x["ck_lane"] == ck_wb - 1):
                m.d.sync += [x["ck_word"].eq(x["ck_word"] + 1), x["ck_lane"].eq(0)]
                m.next = "CK_ISSUE"
        with m.State("CK_DONE"):
            m.d.comb += busy_fsm.eq(1)
            with m.If((x["ck_crc"] ^ 0xFFFFFFFF) == commit["checksum"]):
                m.d.sync += [self.loaded.eq(1), r["n_in"].eq(commit["input_count"]),
                             r["n_out"].eq(commit["output_count"]), x["nbytes"].eq(commit["output_bytes"]),
                             x["ident_len"].eq(commit["identity_bytes"])]
            with m.Else():
                m.d.sync += [kind.eq(frames.ERROR), err.eq(frames.BAD_CHECKSUM), plen.eq(1),
                             self.errors.eq(self.errors + 1)]
            m.next = "SYNC"
