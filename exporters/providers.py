"""ONNX Runtime's execution provider names, spelled once.

The export gate, ``compress eval`` and ``compress bench`` each ask ONNX Runtime for a
provider by name; a misspelt one is not an error there (the session falls back to the CPU
or refuses far from the typo), so the names live here and nowhere else.  No imports: the
bench backends and eval read them without loading the ONNX stack.
"""
ORT_CPU = "CPUExecutionProvider"
ORT_CUDA = "CUDAExecutionProvider"
ORT_TENSORRT = "TensorrtExecutionProvider"
