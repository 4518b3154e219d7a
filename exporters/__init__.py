"""PyTorch -> ONNX (symbolic batch, onnxsim, FP16 variant) -> TensorRT, behind parity gates.

One module per step; ``pipeline.export`` / ``pipeline.export_source`` run them in order
and ``compress export`` (``compressor/cli/export.py``) drives that from the command line:

* ``config``      the frozen ``ExportConfig`` every step reads
* ``sources``     SOURCE -> model: a prune run directory, a pruned model file, a model name
* ``opsets``      which opsets the installed torch can write (no ONNX imports)
* ``onnx_export`` torch.onnx.export, dynamo first, TorchScript as the recorded fallback
* ``simplify``    optional onnxsim pass, kept only if it passes the gate too
* ``fp16``        FP16 ONNX with float32 inputs/outputs
* ``parity``      PyTorch vs ONNX Runtime (or TensorRT): allclose, relative error, top-1
* ``runlimit``    the time limit on every ONNX Runtime run (a graph can loop for ever)
* ``providers``   ONNX Runtime's execution provider names (export, eval and bench share them)
* ``tensorrt``    engine build and run on TensorRT 10.x/11.x, ``tensorrt_available()``
* ``artifacts``   staging names, promotion on success, ``*.failed`` on refusal, sha256
* ``manifest``    ``manifest.json``

Kept free of imports so that importing one module does not load the ONNX stack.
"""
