"""A bare script: the same greedy generation as the dashboard, straight through each runtime's own API, no arena.

    .venv/bin/python benchmarks/bare_text.py {torch|ort|genai|llamacpp} MODEL THREADS IDS NEW_TOKENS

MODEL: the Hugging Face folder (torch), the optimum export (ort), the model builder's folder (genai: its
``og.Generator`` loop, as its examples write it) or the .gguf file (llamacpp: llama-cpp-python's ``Llama.generate``
at temperature 0, its own sampling loop).

Loads once, then reads one line per run from stdin and answers each with one JSON line of clock readings (TTFT,
total, decode tokens/s, the token ids), timed the way the arena's host times a backend: start, a timestamp per
new token from a streamer, end. benchmarks/text_latency.py starts one per compared configuration and interleaves
its runs with the dashboard's rounds.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    kind, model_dir, threads, ids, new_tokens = sys.argv[1:6]
    threads, new_tokens = int(threads), int(new_tokens)
    prompt = [int(t) for t in ids.split(",")]
    if kind in LOOPS:
        return serve(LOOPS[kind](model_dir, threads, prompt, new_tokens))
    import torch
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(threads)
    if kind == "torch":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    else:
        import onnxruntime
        from optimum.onnxruntime import ORTModelForCausalLM

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        model = ORTModelForCausalLM.from_pretrained(model_dir, provider="CPUExecutionProvider",
                                                    session_options=options, use_cache=True)

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value) -> None:
            if self.prompt_seen:
                self.times.append(time.perf_counter())
            self.prompt_seen = True

        def end(self) -> None:
            pass

    input_ids = torch.tensor([prompt])
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        streamer = Stamps()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=0, streamer=streamer)
        end = time.perf_counter()
        stamps = streamer.times
        print(json.dumps({"ttft_s": stamps[0] - start, "total_s": end - start,
                          "decode_tokens_per_s": (len(stamps) - 1) / (end - stamps[0]),
                          "ids": out[0, len(prompt):].tolist()}), flush=True)


def serve(generate) -> None:
    """Answer one timed run per stdin line; ``generate(stamp)`` calls ``stamp()`` once per new token, returns ids."""
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        stamps: list[float] = []

        def stamp(stamps: list[float] = stamps) -> None:
            stamps.append(time.perf_counter())

        start = time.perf_counter()
        ids = generate(stamp)
        end = time.perf_counter()
        print(json.dumps({"ttft_s": stamps[0] - start, "total_s": end - start,
                          "decode_tokens_per_s": (len(stamps) - 1) / (end - stamps[0]), "ids": ids}), flush=True)


def genai_loop(folder: str, threads: int, prompt: list[int], new_tokens: int):
    """onnxruntime-genai's own loop: Generator, append_tokens, generate_next_token, get_next_tokens."""
    import numpy as np
    import onnxruntime_genai as og

    config = og.Config(folder)
    config.clear_providers()
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                         "inter_op_num_threads": 1}}}}))
    model = og.Model(config)
    total = len(prompt) + new_tokens

    def generate(stamp) -> list[int]:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=total, min_length=total)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([prompt], dtype=np.int32))
        out = []
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
            stamp()
        return out

    return generate


def llamacpp_loop(gguf: str, threads: int, prompt: list[int], new_tokens: int):
    """llama-cpp-python's own loop: ``Llama.generate`` at temperature 0 (greedy), stopped after ``new_tokens``."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=gguf, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                          seed=0, verbose=False)

    def generate(stamp) -> list[int]:
        out = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            stamp()
            if len(out) == new_tokens:
                break
        return out

    return generate


LOOPS = {"genai": genai_loop, "llamacpp": llamacpp_loop}


if __name__ == "__main__":
    main()
