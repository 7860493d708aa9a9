"""Benchmark peers outside our stack: onnxruntime-genai in its own venv, and our exported graph in a bare loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aisemble.config.state import state_dir
from aisemble.environment import OFFLINE_ENV
from bench.common import REPO, median

__all__ = [
    "GENAI_REQUIREMENTS",
    "PEER_VENV",
    "bare_onnx_loop",
    "ensure_genai_model",
    "ensure_genai_venv",
    "genai_tokens_per_s",
    "onnx_bare_loop_tokens_per_s",
]

#: The peers' own venv: onnxruntime-genai pulls the CPU `onnxruntime`, which breaks our onnxruntime-gpu beside it.
PEER_VENV = REPO / ".venv-peers"
#: onnxruntime-genai and what its model builder needs, pinned; the shared ones at the main venv's versions (pip
#: reuses its cached wheels). torch is the CPU build (this machine's local wheel, /opt/wheels in pip's config;
#: elsewhere give pip PyTorch's CPU index): the main venv's 2.14.1 is the 5.5 GB CUDA build; the builder only reads
#: the weights with it.
GENAI_REQUIREMENTS = (
    "onnxruntime-genai==0.18.0",
    "onnxruntime==1.32.0",
    "torch==2.13.0+cpu",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "huggingface_hub==2.4.0",
    "onnx==1.23.2",
    "onnx-ir==1.1.0",
    "onnxscript==0.7.2",
    "ml_dtypes==0.5.4",
    "numpy==2.4.6",
    "protobuf==7.36.2",
)
SOURCE_MODEL = "smollm2-135m-instruct"  # the HF folder in our model store (fp32 safetensors)
HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the builder's -m: picks the architecture; -i gives the files
THREADS = 2  # intra-op threads: this machine's cores
TOKENS = 64
ROUNDS = 3  # every figure is the median of this many runs, after one warm-up
_WORKER = Path(__file__).resolve().parent / "_genai_worker.py"


def _venv_python() -> Path:
    return PEER_VENV / "bin" / "python"


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_genai_venv() -> Path | None:
    """The peer venv's python, with GENAI_REQUIREMENTS installed (once: a stamp file says so), or None with a
    printed reason (no network, a wheel missing, ...)."""
    python = _venv_python()
    stamp = PEER_VENV / ".genai-installed"  # holds GENAI_REQUIREMENTS once they are all installed
    wanted = "\n".join(GENAI_REQUIREMENTS) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    started = time.perf_counter()
    if not python.exists():
        print(f"peers: creating {PEER_VENV}", flush=True)
        made = subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], capture_output=True, text=True)
        if made.returncode != 0:
            print(f"peers: cannot create {PEER_VENV}: {_tail(made.stderr)}", flush=True)
            return None
    stamp.unlink(missing_ok=True)
    print(f"peers: installing {', '.join(GENAI_REQUIREMENTS)} into {PEER_VENV} (a few minutes)", flush=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    installed = subprocess.run([*pip, *GENAI_REQUIREMENTS], capture_output=True, text=True)
    if installed.returncode != 0:
        print(f"peers: pip install failed (no network?):\n{_tail(installed.stderr or installed.stdout)}", flush=True)
        return None
    check = subprocess.run([str(python), "-c", "import onnxruntime_genai, onnxruntime, torch"], capture_output=True)
    if check.returncode != 0:
        print(f"peers: installed, but imports fail:\n{_tail(check.stderr.decode())}", flush=True)
        return None
    stamp.write_text(wanted)
    print(f"peers: venv ready in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def genai_model_dir() -> Path:
    """Where the genai model is built: state, never tracked."""
    return state_dir() / "bench" / "genai-smollm2-135m"


def ensure_genai_model(store_root: Path) -> Path | None:
    """The genai build of <store_root>/smollm2-135m-instruct (fp32, CPU), made once with onnxruntime-genai's
    builder into <state dir>/bench/genai-smollm2-135m; None with a printed reason when it cannot be made."""
    target = genai_model_dir()
    if (target / "genai_config.json").exists():
        return target
    source = store_root / SOURCE_MODEL
    if not (source / "config.json").exists():
        print(f"peers: no {SOURCE_MODEL} in {store_root} (fetch it first)", flush=True)
        return None
    python = ensure_genai_venv()
    if python is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(f"peers: building the genai model into {target}", flush=True)
    with tempfile.TemporaryDirectory(prefix=".genai-build-", dir=target.parent) as work:
        output = Path(work) / "model"
        command = [str(python), "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-m", HF_NAME]
        command += ["-o", str(output), "-p", "fp32", "-e", "cpu", "-c", str(Path(work) / "cache")]
        built = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **OFFLINE_ENV}, cwd=work)
        if built.returncode != 0 or not (output / "genai_config.json").exists():
            print(f"peers: the genai builder failed:\n{_tail(built.stderr or built.stdout)}", flush=True)
            return None
        shutil.rmtree(target, ignore_errors=True)
        output.rename(target)  # whole or not at all: genai_config.json is the stamp
    print(f"peers: genai model built in {time.perf_counter() - started:.0f} s", flush=True)
    return target


def _prompts(count: int) -> list[str]:
    """count distinct chat prompts, as the batching benchmark builds them (its PROMPTS in the chat template)."""
    from transformers import AutoTokenizer

    from aisemble.store.model_store import ModelStore, default_store_root
    from bench.batching import PROMPTS, _chat_texts

    tokenizer = AutoTokenizer.from_pretrained(ModelStore(default_store_root()).require(SOURCE_MODEL))
    texts = _chat_texts(tokenizer, min(count, len(PROMPTS)))
    for i in range(len(texts), count):  # more than PROMPTS has: numbered variants, still distinct
        content = f"{PROMPTS[i % len(PROMPTS)]} Part {i // len(PROMPTS) + 1}."
        texts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        )
    return texts


def genai_tokens_per_s(
    batch_sizes: tuple[int, ...] = (1, 8), tokens: int = TOKENS, spinning: bool = True
) -> dict[int, float] | None:
    """onnxruntime-genai on the same SmolLM2-135M weights, greedy, exactly `tokens` new tokens for each of
    `batch` distinct chat prompts (the batching benchmark's): {batch: generated tokens across the batch per
    second} (median of ROUNDS after a warm-up, tokenising included), or None with a printed reason. Runs
    bench/_genai_worker.py in the peer venv; genai's ONNX Runtime session gets intra_op_num_threads=THREADS and
    `session.intra_op.allow_spinning` (ORT's default: on) through its config's session_options."""
    from aisemble.store.model_store import default_store_root

    python = ensure_genai_venv()
    model = ensure_genai_model(default_store_root()) if python is not None else None
    if python is None or model is None:
        return None
    job = {
        "model": str(model),
        "texts": _prompts(max(batch_sizes)),
        "batch_sizes": list(batch_sizes),
        "tokens": tokens,
        "threads": THREADS,
        "rounds": ROUNDS,
        "spinning": spinning,
    }
    ran = subprocess.run([str(python), str(_WORKER)], input=json.dumps(job), capture_output=True, text=True)
    if ran.returncode != 0:
        print(f"peers: the genai worker failed:\n{_tail(ran.stderr)}", flush=True)
        return None
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    return {int(size): float(rate) for size, rate in result["tokens_per_s"].items()}


def bare_onnx_loop(spinning: bool, tokens: int = TOKENS) -> Callable[[], float]:
    """Our exported graph (smollm2-135m-instruct-onnx) on ONNX Runtime in this process, in a plain numpy greedy
    loop (prefill, then one token a step with past key/values), batch 1, bench/llm.py's PROMPT, THREADS intra-op
    threads, `session.intra_op.allow_spinning` on or off: a function that runs it once and returns tokens/s."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from aisemble.store.causal_lm_graph import KV_INPUT_NAMES, ONNX_FILE
    from aisemble.store.model_store import ModelStore, default_store_root
    from bench.llm import PROMPT

    path = ModelStore(default_store_root()).require("smollm2-135m-instruct-onnx")
    config = json.loads((path / "config.json").read_text())
    layers, heads = int(config["num_hidden_layers"]), int(config["num_key_value_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(path / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    kv_names = KV_INPUT_NAMES(layers)
    ids = AutoTokenizer.from_pretrained(path)(PROMPT, return_tensors="np")["input_ids"].astype(np.int64)

    def generate() -> float:
        started = time.perf_counter()
        length = ids.shape[1]
        feeds = {
            "input_ids": ids,
            "attention_mask": np.ones((1, length), dtype=np.int64),
            "position_ids": np.arange(length, dtype=np.int64)[None, :],
        }
        empty = np.zeros((1, heads, 0, head_dim), dtype=np.float32)
        feeds.update((name, empty) for name in kv_names)
        for _ in range(tokens):  # each run yields one token: the prefill the first, each decode step one more
            result = session.run(outputs, feeds)
            token = result[0][:, -1].argmax(axis=-1)
            length += 1
            feeds = {
                "input_ids": token[:, None].astype(np.int64),
                "attention_mask": np.ones((1, length), dtype=np.int64),
                "position_ids": np.array([[length - 1]], dtype=np.int64),
            }
            feeds.update(zip(kv_names, result[1:], strict=True))
        return tokens / (time.perf_counter() - started)

    return generate


def onnx_bare_loop_tokens_per_s(spinning: bool, tokens: int = TOKENS) -> float:
    """`bare_onnx_loop`'s tokens/s, median of ROUNDS after a warm-up."""
    generate = bare_onnx_loop(spinning, tokens)
    generate()  # warm-up
    return median([generate() for _ in range(ROUNDS)])


def main() -> None:
    """Every peer figure, printed (python -m bench.peers)."""
    from aisemble.environment import apply_offline_defaults

    apply_offline_defaults()
    for spinning in (True, False):
        rate = onnx_bare_loop_tokens_per_s(spinning)
        print(f"our graph, bare loop, batch 1, spinning {'on' if spinning else 'off'}: {rate:.1f} tok/s", flush=True)
    for spinning in (True, False):
        rates = genai_tokens_per_s(spinning=spinning)
        for size, rate in (rates or {}).items():
            state = "on" if spinning else "off"
            print(f"onnxruntime-genai 0.18.0, batch {size}, spinning {state}: {rate:.1f} tok/s", flush=True)


if __name__ == "__main__":
    main()
