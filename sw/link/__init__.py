"""The serial link: the protocol defined once (:mod:`.frames`, shared with the gateware in
:mod:`lowbit.hw.hostlink`) and the host driver that speaks it (:mod:`.host`)."""
