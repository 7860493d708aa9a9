"""onnxruntime-genai greedy throughput, run in the peer venv by bench/peers.py: a JSON job on stdin, JSON out."""

import json
import statistics
import sys
import time

import numpy as np
import onnxruntime_genai as og


def main() -> None:
    job = json.load(sys.stdin)
    tokens, rounds = int(job["tokens"]), int(job["rounds"])
    config = og.Config(job["model"])
    # genai builds its ONNX Runtime session from genai_config.json's session_options: intra_op_num_threads is
    # its own key; any other key (here the spinning switch) goes to the session as a config entry.
    session_options = {
        "intra_op_num_threads": int(job["threads"]),
        "session.intra_op.allow_spinning": "1" if job["spinning"] else "0",
    }
    config.overlay(json.dumps({"model": {"decoder": {"session_options": session_options}}}))
    model = og.Model(config)
    tokenizer = og.Tokenizer(model)

    def generate(texts: list[str]) -> tuple[float, list[list[int]]]:
        """Greedy, exactly `tokens` new tokens for each text: (seconds, the new token ids of each)."""
        started = time.perf_counter()
        ids = tokenizer.encode_batch(texts)
        length = ids.shape()[1]  # the padded prompt length: every row gets max_length - length new tokens
        params = og.GeneratorParams(model)
        params.set_search_options(
            do_sample=False, batch_size=len(texts), max_length=length + tokens, min_length=length + tokens
        )
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        while not generator.is_done():
            generator.generate_next_token()
        elapsed = time.perf_counter() - started
        new = [np.asarray(generator.get_sequence(i))[length:].tolist() for i in range(len(texts))]
        return elapsed, new

    rates, outputs, prompt_tokens = {}, {}, {}
    for size in job["batch_sizes"]:
        texts = job["texts"][:size]
        _, new = generate(texts)  # warm-up
        if any(len(row) != tokens for row in new):
            raise SystemExit(f"batch {size}: generated {[len(row) for row in new]} tokens, not {tokens} each")
        times = [generate(texts)[0] for _ in range(rounds)]
        rates[size] = size * tokens / statistics.median(times)
        outputs[size] = new
        prompt_tokens[size] = [len(tokenizer.encode(text)) for text in texts]
    print(json.dumps({"tokens_per_s": rates, "token_ids": outputs, "prompt_tokens": prompt_tokens}))


if __name__ == "__main__":
    main()
