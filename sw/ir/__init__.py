"""The integer model and its contract: the arithmetic (:mod:`.arith`, the executable form of
``docs/arithmetic.md``), the quantized IR saved as ``.lbm`` (:mod:`.model`), float nets
(:mod:`.floatnet`) and the NumPy integer reference every hardware output is compared with
(:mod:`.intref`). Everything else in lowbit builds on this package; it imports nothing from a later stage."""
