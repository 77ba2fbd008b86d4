"""Host side of lowbit: quantization, the integer reference model, importers, builds and the driver."""
