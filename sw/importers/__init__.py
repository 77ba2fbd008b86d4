"""Model files in: each module turns one kind of file into a :class:`~lowbit.sw.ir.floatnet.FloatNet`
(float ``.npz``, float ONNX, PyTorch) or, for already-quantized graphs, straight into a
:class:`~lowbit.sw.ir.model.Model` (ONNX QDQ, QONNX/Brevitas). :mod:`.load` picks the importer by file."""
