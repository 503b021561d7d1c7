"""Conversion steps, apart from the runners that use their output (Polygraphy's loader/runner split).

Each step takes the artifact cache and the isolated-process runner from the `LoadContext` it is given, builds its
artifact in a short-lived process (a crashing exporter or builder is reported, not inherited) and stores it
atomically in the cache. Backends import these modules; these modules import no backend.

- `onnx_export`: the cached ONNX export by torch.onnx's dynamo exporter or the GenAI model builder (causal LM
  with KV cache; a diffusion pipeline through `onnx_pipeline_export`); `onnx_files` holds what they share.
- `onnx_quantize`: weight-only int8/int4 (MatMulNBits, the tied output projection too) and dynamic int8 of a
  text export, cached by source export and settings.
- `tensorrt_profiles`: optimization profiles (shape ranges) for an LLM decoder and diffusion components, and the
  same profiles as ONNX Runtime TensorRT-provider options. Pure Python.
- `tensorrt_build`: precision plans per TensorRT version, engine cache keys, the builder set-up and the cached
  engine build.
"""
