"""Exports of samkit models to other runtimes (ONNX: :mod:`samkit.export.onnx`, ``pip install samkit[onnx]``)."""
