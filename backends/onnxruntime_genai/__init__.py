"""ONNX Runtime GenAI (onnxruntime-genai): a model built by its own model builder (cached) or a user's GenAI model
folder, run with its own generation loop (``og.Generator``: KV cache, search and stopping inside the library).

One module per job, like backends/onnxruntime: ``options`` (the options dataclass and the install line),
``precision`` (what a GenAI model's graph really runs at), ``backend`` (the `OnnxRuntimeGenAIBackend` the registry
names). The build itself is a conversion step (`backends.conversion.genai_build`). Nothing here imports
onnxruntime_genai at module level.
"""
