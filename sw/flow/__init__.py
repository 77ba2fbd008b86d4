"""From a quantized Model to a bitstream and back: folding onto the device (:mod:`.fold`), ROM images
(:mod:`.rom`), the build and its record (:mod:`.build`), synthesis / place-and-route (:mod:`.synth`) through
the one module that names a tool (:mod:`.toolchain`), re-weighting a built bitstream (:mod:`.reweight`),
reading ROMs back out of one (:mod:`.bitstream_roms`), and simulating what was built (:mod:`.simulate`)."""
