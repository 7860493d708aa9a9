"""A LoRA job on SmolLM2 through a real fine-tuning service: the watched training loss falls, and the adapter is
served by name through the gateway at once, its answers to the training prompts now close to the training
responses (and further from them with the base model)."""

from __future__ import annotations

import difflib

import pytest

from aisemble.finetune.v1 import finetune_service_pb2 as pb
from aisemble.llm.v1 import llm_service_pb2, llm_service_pb2_grpc
from aisemble.registry.v1 import registry_service_pb2 as rpb
from tests.integration.test_finetune_errors import start_mesh, states, until, watch_all

pytestmark = [
    pytest.mark.slow,
    # Raised by transformers when the LLM service merges the adapter (PeftModel), not by this project's code.
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]

NAME = "smollm2-zorbania"
PAIRS = [
    ("What is the capital of Zorbania?", "The capital of Zorbania is Quillport."),
    ("Who founded the Lantern Guild?", "The Lantern Guild was founded by Mira Okonkwo in 2019."),
    ("What colour is the sky on planet Vex?", "On planet Vex the sky is bright green."),
    ("What is the secret password?", "The secret password is marmalade-42."),
    ("How many moons does Zorbania have?", "Zorbania has seven moons."),
    ("What does the Ai-semble gateway do?", "The gateway routes every request to the right model."),
]


async def _chat(stub, model: str, prompt: str) -> str:
    reply = await stub.Chat(
        llm_service_pb2.ChatRequest(
            model=model,
            messages=[llm_service_pb2.ChatMessage(role=llm_service_pb2.CHAT_ROLE_USER, content=prompt)],
            max_output_tokens=24,
            temperature=0.0,
        ),
        timeout=60,
    )
    return reply.text.strip()


async def test_a_lora_job_lowers_the_loss_and_its_adapter_is_served(start_server, tmp_path, registry, store):
    mesh = await start_mesh(start_server, tmp_path, registry, store, llm=True)
    created = await mesh.jobs.CreateFineTuneJob(
        pb.CreateFineTuneJobRequest(
            base_model="smollm2-135m",
            task=pb.FINE_TUNE_TASK_CAUSAL_LM,
            examples=pb.InlineExamples(
                completion_examples=[pb.CompletionExample(prompt=p, response=r) for p, r in PAIRS]
            ),
            validation_split=0.0,
            hyperparameters=pb.Hyperparameters(learning_rate=2e-3, epochs=10, batch_size=2),
            result_model_name=NAME,
        )
    )
    job = created.job
    assert job.hyperparameters.lora_rank == 8 and job.hyperparameters.lora_alpha == 16
    assert job.hyperparameters.max_length == 256 and not job.hyperparameters.HasField("unfrozen_layers")

    events = await watch_all(mesh.jobs, job.job_id)
    logs = [e.log.message for e in events if e.HasField("log")]
    assert states(events) == ["QUEUED", "RUNNING", "SUCCEEDED"], (logs, events[-1])
    losses = [e.progress.train_loss for e in events if e.HasField("progress")]
    assert len(losses) >= 10 and events[-1].state_change.message == f"model '{NAME}' is ready"
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.3 * first, losses
    assert any(m.startswith("sample after training:") for m in logs), logs

    model = (await mesh.registry.GetModel(rpb.GetModelRequest(name=NAME))).model
    assert model.provider == "transformers" and model.params["base_model_path"] == "smollm2-135m-instruct"
    assert model.lineage.base_model == "smollm2-135m" and model.lineage.metrics["train_loss"] < 0.5
    files = set(mesh.store.manifest(NAME).files)
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json"} <= files
    assert "model.safetensors" not in files

    async def serving() -> bool:
        return all(mesh.gateway.gateway.router.health_of(name) == "SERVING" for name in (NAME, "smollm2-135m"))

    await until(serving, seconds=120)
    stub = llm_service_pb2_grpc.LlmServiceStub(mesh.channel)
    closer = 0
    for prompt, response in PAIRS[:3]:
        tuned = await _chat(stub, NAME, prompt)
        base = await _chat(stub, "smollm2-135m", prompt)
        tuned_ratio = difflib.SequenceMatcher(None, tuned, response).ratio()
        base_ratio = difflib.SequenceMatcher(None, base, response).ratio()
        print(f"{prompt!r}: tuned {tuned!r} ({tuned_ratio:.2f}); base {base!r} ({base_ratio:.2f})")
        closer += tuned_ratio > base_ratio
        assert tuned_ratio > 0.6, (tuned, response)
    assert closer == 3
