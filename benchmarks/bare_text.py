"""A bare script: the same greedy generation as the dashboard, straight through each runtime's own API, no arena.

    .venv/bin/python benchmarks/bare_text.py {torch|ort|genai|llamacpp} MODEL THREADS IDS NEW_TOKENS

MODEL: the Hugging Face folder (torch), the ONNX export folder (ort: a plain numpy loop over one
``InferenceSession``, present fed back as past, as ONNX Runtime's examples write it), the model builder's folder
(genai: its ``og.Generator`` loop, as its examples write it) or the .gguf file (llamacpp: llama-cpp-python's
``Llama.generate`` at temperature 0, its own sampling loop).

Loads once, then reads one line per run from stdin and answers each with one JSON line of clock readings (TTFT,
total, decode tokens/s, the token ids), timed the way the arena's host times a backend: start, a timestamp per
new token, end. benchmarks/text_latency.py starts one per compared configuration and interleaves its runs with the
dashboard's rounds; it also runs the same loops (`STEPS`) inside the dashboard's own worker, on the model that
worker loaded (benchmarks/own_loop.py), to tell the arena's code from the process it runs in.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

Generate = Callable[[Callable[[], None]], list[int]]  # generate(stamp): calls stamp() once per new token


def main() -> None:
    kind, model_dir, threads, ids, new_tokens = sys.argv[1:6]
    prompt = [int(t) for t in ids.split(",")]
    generate = STEPS[kind](LOADERS[kind](model_dir, int(threads)), prompt, int(new_tokens))
    print(json.dumps({"ready": True}), flush=True)
    for _line in sys.stdin:
        print(json.dumps(timed(generate)), flush=True)


def timed(generate: Generate) -> dict[str, Any]:
    """One run's clock readings: TTFT, total, decode tokens/s (after the first token), and the new ids."""
    stamps: list[float] = []
    start = time.perf_counter()
    ids = generate(lambda: stamps.append(time.perf_counter()))
    end = time.perf_counter()
    return {"ttft_s": stamps[0] - start, "total_s": end - start,
            "decode_tokens_per_s": (len(stamps) - 1) / (end - stamps[0]), "ids": ids}


# --- loading: each runtime's own API, the threads the arena gives it ---------------------------------------
def load_torch(model_dir: str, threads: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(threads)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def load_ort(model_dir: str, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"])


def load_genai(folder: str, threads: int) -> Any:
    import onnxruntime_genai as og

    config = og.Config(folder)
    config.clear_providers()
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                         "inter_op_num_threads": 1}}}}))
    return og.Model(config)


def load_llamacpp(gguf: str, threads: int) -> Any:
    import llama_cpp

    return llama_cpp.Llama(model_path=gguf, n_ctx=512, n_batch=512, n_threads=threads, n_threads_batch=threads,
                           seed=0, verbose=False)


# --- the loops: each runtime's own, on a loaded model -----------------------------------------------------
def ort_steps(session: Any, prompt: list[int], new_tokens: int) -> Generate:
    """A plain greedy loop over a KV-cache decoder session: numpy in, ``present.*`` fed back as ``past_*``."""
    import numpy as np

    inputs = {i.name: i for i in session.get_inputs()}
    past_names = [name for name in inputs if name.startswith("past_key_values.")]

    def generate(stamp: Callable[[], None]) -> list[int]:
        past = {name: np.zeros((1, inputs[name].shape[1], 0, inputs[name].shape[3]), np.float32)
                for name in past_names}
        ids, seen, out = np.array([prompt], np.int64), 0, []
        while len(out) < new_tokens:
            total = seen + ids.shape[1]
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, total), np.int64),
                     "position_ids": np.arange(seen, total, dtype=np.int64)[None], **past}
            results = dict(zip([o.name for o in session.get_outputs()],
                               session.run(None, {k: v for k, v in feeds.items() if k in inputs}), strict=True))
            token = int(results["logits"][0, -1].argmax())
            stamp()
            out.append(token)
            past = {name: results[name.replace("past_key_values", "present")] for name in past_names}
            seen, ids = total, np.array([[token]], np.int64)
        return out

    return generate


def hf_steps(model: Any, prompt: list[int], new_tokens: int) -> Generate:
    """transformers' ``generate``, greedy, a timestamp per new token from a streamer."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        def __init__(self, stamp: Callable[[], None]) -> None:
            self.stamp, self.prompt_seen = stamp, False

        def put(self, value) -> None:
            if self.prompt_seen:
                self.stamp()
            self.prompt_seen = True

        def end(self) -> None:
            pass

    input_ids = torch.tensor([prompt])

    def generate(stamp: Callable[[], None]) -> list[int]:
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 num_beams=1, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=0, streamer=Stamps(stamp))
        return out[0, len(prompt):].tolist()

    return generate


def genai_steps(model: Any, prompt: list[int], new_tokens: int) -> Generate:
    """onnxruntime-genai's own loop: Generator, append_tokens, generate_next_token, get_next_tokens."""
    import numpy as np
    import onnxruntime_genai as og

    total = len(prompt) + new_tokens

    def generate(stamp: Callable[[], None]) -> list[int]:
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


def llamacpp_steps(llm: Any, prompt: list[int], new_tokens: int) -> Generate:
    """llama-cpp-python's own loop: ``Llama.generate`` at temperature 0 (greedy), stopped after ``new_tokens``."""

    def generate(stamp: Callable[[], None]) -> list[int]:
        out = []
        for token in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            stamp()
            if len(out) == new_tokens:
                break
        return out

    return generate


LOADERS = {"torch": load_torch, "ort": load_ort, "genai": load_genai, "llamacpp": load_llamacpp}
STEPS = {"torch": hf_steps, "ort": ort_steps, "genai": genai_steps, "llamacpp": llamacpp_steps}


if __name__ == "__main__":
    main()
