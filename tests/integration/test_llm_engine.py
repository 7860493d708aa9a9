"""The LLM engine on the real SmolLM2 through gRPC: shared weights, LoRA adapters served unmerged (alone and mixed in
one batch), prefix reuse giving the tokens of a full prefill."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisemble.llm.v1 import llm_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2_grpc
from aisemble.rpc.server import ServerConfig
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from services.llm.app import build_server
from services.llm.backends.engine import ENGINES
from services.llm.scheduler import ContinuousBatcher
from tests.integration.conftest import LLM_MODELS
from tests.integration.test_finetune_errors import linked_store

BASE = "smollm2-135m"
BASE_ARTIFACT = "smollm2-135m-instruct"
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Roses are red,"]
TOKENS = 8


def _make_adapter(store: ModelStore, folder: Path, seed: int, targets: list[str]) -> Path:
    """A real peft LoRA adapter on SmolLM2 with random (not identity) low-rank matrices, so it changes the
    output; written as our fine-tuning writes one (the adapter files and the base's config and tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_path = store.require(BASE_ARTIFACT)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(folder)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (base_path / name).exists():
            shutil.copy(base_path / name, folder / name)
    return folder


def _merged_greedy(store: ModelStore, adapter: Path, prompt: str) -> str:
    """The reference: peft merges the adapter into a copy of the base; transformers' generate() decodes greedily."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_path = store.require(BASE_ARTIFACT)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload().eval()
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = merged.generate(**ids, max_new_tokens=TOKENS, min_new_tokens=TOKENS, do_sample=False)
    return str(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, store):
    """A store with the base artifacts linked in and two adapters (different seeds and targets) imported."""
    root = tmp_path_factory.mktemp("engine")
    scratch = linked_store(store, root / "store")
    builder = StoreBuilder(scratch.root, recipes={})
    sources = {
        "lora-a": _make_adapter(store, root / "a", seed=1, targets=["q_proj", "v_proj"]),
        "lora-b": _make_adapter(store, root / "b", seed=2, targets=["q_proj", "k_proj", "v_proj", "o_proj"]),
    }
    for name, folder in sources.items():
        builder.import_files(name, folder)
    return scratch, sources


def _adapter_spec(registry, name: str):
    return dataclasses.replace(
        registry[BASE], name=name, model_path=name, params={"base_model_path": BASE_ARTIFACT}, preload=True
    )


@pytest.fixture
async def engine_llm(registry, adapters, start_server):
    """An LLM service hosting the base and the two adapters, from the scratch store."""
    scratch, _sources = adapters
    models = {BASE: registry[BASE], **{name: _adapter_spec(registry, name) for name in ("lora-a", "lora-b")}}
    server = build_server(ServerConfig(name="llm-engine"), None, models, store=scratch)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    return server, stub


async def _complete(stub, model: str, prompt: str) -> str:
    request = pb.CompleteRequest(
        model=model, prompt=prompt, max_output_tokens=TOKENS, min_output_tokens=TOKENS, temperature=0
    )
    return (await stub.Complete(request, timeout=120)).text


async def test_an_adapter_served_unmerged_gives_the_merged_models_greedy_tokens(engine_llm, adapters, store):
    server, stub = engine_llm
    _scratch, sources = adapters
    backends = {name: server.model_host.models[name].backend for name in (BASE, "lora-a", "lora-b")}
    assert backends["lora-a"].engine is backends[BASE].engine  # one copy of the base weights
    assert backends["lora-a"].info()["lora_adapter"]["served"] == "unmerged, on the shared base"
    for name in ("lora-a", "lora-b"):
        for prompt in PROMPTS[:2]:
            served = await _complete(stub, name, prompt)
            reference = await asyncio.to_thread(_merged_greedy, store, sources[name], prompt)
            assert served == reference, (name, prompt)
    assert await _complete(stub, "lora-a", PROMPTS[0]) != await _complete(stub, BASE, PROMPTS[0])


async def test_the_base_and_two_adapters_in_one_batch_each_give_their_own_tokens(engine_llm):
    server, stub = engine_llm
    names = [BASE, "lora-a", "lora-b"]
    alone = {(name, prompt): await _complete(stub, name, prompt) for name in names for prompt in PROMPTS}
    batcher: ContinuousBatcher = server.model_host.models[BASE].backend.batcher
    assert all(server.model_host.models[name].backend.batcher is batcher for name in names)
    batcher.stats.max_batch_seen = 0
    pairs = [(name, prompt) for prompt in PROMPTS for name in names]
    together = await asyncio.gather(*(_complete(stub, name, prompt) for name, prompt in pairs))
    assert batcher.stats.max_batch_seen >= 3, "the base and the adapters were not decoded together"
    for pair, text in zip(pairs, together, strict=True):
        assert text == alone[pair], pair
    for name in ("lora-a", "lora-b"):  # each adapter answers in its own way
        assert any(alone[(name, prompt)] != alone[(BASE, prompt)] for prompt in PROMPTS), name


async def test_entries_naming_one_artifact_share_its_weights(registry, store, start_server):
    twin = dataclasses.replace(registry[BASE], name="smollm2-twin", params={"max_batch_size": 4})
    server = build_server(ServerConfig(name="llm-twins"), None, {BASE: registry[BASE], twin.name: twin}, store=store)
    stub = llm_service_pb2_grpc.LlmServiceStub(await start_server(server))
    first, second = (server.model_host.models[name].backend for name in (BASE, twin.name))
    assert first.engine is second.engine and first.info()["shared_by"] >= 2
    assert first.batcher is not second.batcher and second.batcher.limits.max_batch_size == 4
    assert await _complete(stub, twin.name, PROMPTS[0]) == await _complete(stub, BASE, PROMPTS[0])
    users = ENGINES.users(first._engine_key)
    await server.model_host.remove(twin.name)
    assert ENGINES.users(first._engine_key) == users - 1 and first.engine is not None


@contextlib.contextmanager
def _prefix_reuse(batcher: ContinuousBatcher, on: bool) -> Iterator[None]:
    budget = batcher.prefix_cache.max_bytes
    batcher.prefix_cache.max_bytes = budget if on else 0
    try:
        yield
    finally:
        batcher.prefix_cache.max_bytes = budget


@pytest.mark.parametrize("model", LLM_MODELS)
async def test_a_chats_second_turn_reuses_the_first_and_gives_the_same_tokens(llm, model):
    server, stub, _ = llm
    batcher: ContinuousBatcher = server.model_host.models[model].backend.batcher
    system = pb.ChatMessage(role=pb.CHAT_ROLE_SYSTEM, content="You are a terse assistant for a lighthouse museum.")
    first_turn = [system, pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="Name a famous lighthouse.")]

    async def chat(messages: list[pb.ChatMessage]) -> str:
        request = pb.ChatRequest(model=model, messages=messages, max_output_tokens=10, temperature=0)
        return (await stub.Chat(request, timeout=120)).text

    with _prefix_reuse(batcher, on=False):
        answer = await chat(first_turn)
        second_turn = [
            *first_turn,
            pb.ChatMessage(role=pb.CHAT_ROLE_ASSISTANT, content=answer),
            pb.ChatMessage(role=pb.CHAT_ROLE_USER, content="How tall is it?"),
        ]
        full_prefill = await chat(second_turn)
    with _prefix_reuse(batcher, on=True):
        assert await chat(first_turn) == answer
        hits, reused = batcher.stats.prefix_hits, batcher.stats.prefix_tokens_reused
        assert await chat(second_turn) == full_prefill
    assert batcher.stats.prefix_hits == hits + 1
    assert batcher.stats.prefix_tokens_reused - reused >= 30  # the system prompt, the first question and answer
