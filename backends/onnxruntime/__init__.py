"""ONNX Runtime: an export with KV cache (cached on disk; torch.onnx dynamo or the GenAI model builder) or a user's
export (optimum-cli's layouts included), run by the arena's own greedy loop.

Execution providers come from what onnxruntime reports: CPU here; CUDA and TensorRT where onnxruntime-gpu and
TensorRT are installed. The export itself (`backends.conversion.onnx_export`) runs in a separate short-lived
process (``ctx.run_isolated``): an exporter segfault stays there, and torch's threads never share this worker with
ONNX Runtime's.

One module per job: ``providers`` (which execution providers really start here, their libraries, their log),
``precision`` (what a graph really runs at, and this backend's precision names as the verdicts' classes),
``layout`` (where the graphs are in an export folder), ``options`` (the options dataclass), ``backend`` (the
`OnnxRuntimeBackend` the registry names). This file imports none of them: ``python -m
backends.onnxruntime.providers`` (a provider check's own process) then loads only what it runs.
"""
