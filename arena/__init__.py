"""Backend Arena core: model catalog, requests and results, worker processes, cache, timing, reports.

Importing this package never imports torch, transformers or onnxruntime: those live in worker processes.
"""
