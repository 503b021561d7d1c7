"""A bare script: the same greedy generation as the dashboard, straight through transformers / optimum, no arena.

    .venv/bin/python benchmarks/bare_text.py {torch|ort} MODEL_DIR THREADS IDS NEW_TOKENS

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


if __name__ == "__main__":
    main()
