"""Every RPC the mesh serves, found by server reflection and sent hostile requests: a clear status, never a crash."""

from __future__ import annotations

import functools
import math
import os
import re
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from inference import open_inference_grpc_pb2

from aisemble.ensemble.v1 import ensemble_service_pb2
from aisemble.finetune.v1 import finetune_service_pb2, finetune_service_pb2_grpc
from aisemble.llm.v1 import llm_service_pb2
from aisemble.multimodal.v1 import multimodal_service_pb2
from aisemble.nlp.v1 import nlp_service_pb2
from aisemble.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from aisemble.rpc.auth import required_role
from aisemble.rpc.validation import enum_violations
from aisemble.vision.v1 import vision_service_pb2
from entrypoints.launcher import wait_healthy
from tests.assets.pictures import encode, png_bomb, render_line
from tests.e2e.conftest import SERVICES, Target, call_metadata

#: Hypothesis examples per RPC (scale it up for a soak run: AISEMBLE_FUZZ_EXAMPLES=500).
EXAMPLES = int(os.environ.get("AISEMBLE_FUZZ_EXAMPLES", "12"))
#: Mixed into every RPC's fixed seed: another value, other requests (still reproducible).
SEED = os.environ.get("AISEMBLE_FUZZ_SEED", "")
DEADLINE_S = 10.0
#: A stream is cancelled after this many replies, or when none comes for this long.
MAX_REPLIES, STREAM_IDLE_S = 3, 1.0
#: Codes that are a bug wherever they come from.
BUGS = (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL)
#: A grpc.aio client bug (grpc/grpc#36066; fix proposed in grpc/grpc#43486): when a server ends a client stream
#: while the client still writes, the write reports INTERNAL "Internal error from Core" in place of the server's
#: status. The gateway forwards client streams with grpc.aio, so a service's refusal of an early message sometimes
#: reaches the caller so. Counted apart (gateway/router.py's to work around), never hidden.
KNOWN_STREAM_LOSS = "Internal error from Core"
#: Services grpc's own packages serve on every port: fuzzed with fewer examples.
GRPC_SERVICES = ("grpc.health.", "grpc.reflection.")
#: service -> the contract its port serves, as the generated code has it (reflection is checked against it).
SERVICE_OF = {
    "llm": llm_service_pb2.DESCRIPTOR.services_by_name["LlmService"],
    "nlp": nlp_service_pb2.DESCRIPTOR.services_by_name["NlpService"],
    "vision": vision_service_pb2.DESCRIPTOR.services_by_name["VisionService"],
    "multimodal": multimodal_service_pb2.DESCRIPTOR.services_by_name["MultimodalService"],
    "ensemble": ensemble_service_pb2.DESCRIPTOR.services_by_name["EnsembleService"],
    "finetune": finetune_service_pb2.DESCRIPTOR.services_by_name["FineTuneService"],
}
REGISTRY = registry_service_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"]
KSERVE = open_inference_grpc_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_OF["registry"] = REGISTRY  # the registry service's own port (the control plane) serves the same contract
TARGETS = ["gateway", "registry", *SERVICES]
KEYS = ("none", "admin", "bogus", "malformed")


@functools.cache
def _tiny_png() -> bytes:
    return encode(render_line("fuzz 42", size=12))


_IMAGES = [b"", b"\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0" + b"\x00" * 32, b"GIF89a", b"\x00" * 4096]
_STRINGS = ["", " ", "\x00", "a\x00b", "auto", "AUTO", " auto ", "\ufeff", "\u202etxt", "\U0010ffff", "🦄" * 40]
_STRINGS += ["%s%n%x", "{0}", "'; DROP TABLE models; --", "\r\n\r\n", "../../etc/passwd", "é" * 300, "a" * 5000]
_URIS = ["file:///etc/passwd", "file://../../x.png", "http://169.254.169.254/latest", "s3://bucket/a.png", "data:,"]
_HUGE_TEXT = "x" * 300_000  # over the 256 KiB prompt limit
#: Tokens to generate: at most 4 (valid) or beyond every model's limit (1024): an LLM call stays short.
_TOKENS = st.one_of(st.integers(1, 4), st.sampled_from([0, -1, 1025]), st.integers(-(2**31), 2**31 - 1))
_UNKNOWN_MODEL = st.text(max_size=12).map(lambda text: f"no-such-model-{text}")
_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 3.4e38, math.nan, math.inf, -math.inf]


def _sized(element: st.SearchStrategy, short: st.SearchStrategy) -> st.SearchStrategy[list]:
    """A few elements, or many copies of a short one (one draw: hypothesis' data budget stays small), around the
    limits (256 texts, 8 stop sequences)."""
    many = st.tuples(short, st.sampled_from([9, 256, 257, 300])).map(lambda pair: [pair[0]] * pair[1])
    return st.one_of(st.lists(element, max_size=3), st.lists(element, max_size=3), many)


def _mostly(plausible: st.SearchStrategy, *hostile: st.SearchStrategy) -> st.SearchStrategy:
    """Plausible values three times in four, so that a request with several fields still reaches the models."""
    return st.one_of(*[plausible] * (3 * len(hostile)), *hostile)


class Hostile:
    """Hypothesis strategies of hostile messages of any type, built from its descriptor (cached per type)."""

    MAX_DEPTH = 4

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self._cache: dict[tuple[str, int], st.SearchStrategy[Message]] = {}
        tiny = _tiny_png()
        self.images = [*_IMAGES, tiny, tiny[: len(tiny) // 2], png_bomb(), b'{"prompt": "a", "response": "b"}\n']

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        """Messages of this type: any subset of its fields set, one member per oneof, hostile values."""
        key = (descriptor.full_name, depth)
        if key not in self._cache:
            self._cache[key] = self._build(descriptor, depth)
        return self._cache[key]

    def wrong_enums(self, descriptor: Descriptor, depth: int = 0) -> Message | None:
        """A message with every enum field (to two levels down) one past its enum's last value; None: no enum."""
        message, touched = GetMessageClass(descriptor)(), False
        for fd in descriptor.fields:
            entry = fd.message_type
            if entry is not None and (entry.GetOptions().map_entry or depth >= 2):
                continue
            value: object = None
            if fd.enum_type is not None:
                value = max(v.number for v in fd.enum_type.values) + 1
            elif entry is not None:
                value = self.wrong_enums(entry, depth + 1)
            if value is None:
                continue
            touched = True
            if fd.is_repeated:
                getattr(message, fd.name).append(value)
            elif entry is not None:
                getattr(message, fd.name).CopyFrom(value)
            else:
                setattr(message, fd.name, value)
        return message if touched else None

    def _build(self, descriptor: Descriptor, depth: int) -> st.SearchStrategy[Message]:
        cls = GetMessageClass(descriptor)
        if depth > self.MAX_DEPTH:
            return st.just(cls())
        required, optional, oneofs = {}, {}, {}
        for fd in descriptor.fields:
            oneof = fd.containing_oneof
            value = self._field(descriptor, fd, depth)
            if (descriptor.name, fd.name) in _FORCED:
                required[fd.name] = _FORCED[descriptor.name, fd.name]
            elif fd.name == "max_output_tokens":
                required[fd.name] = _TOKENS
            elif oneof is not None and oneof.name != f"_{fd.name}":  # a real oneof, not proto3 `optional`
                oneofs.setdefault(oneof.name, []).append(value.map(lambda v, name=fd.name: (name, v)))
            elif depth == 0 and fd.name in _KEY_FIELDS:  # always there (maybe empty), else most stop at "required"
                required[fd.name] = value
            else:
                optional[fd.name] = value
        for name, members in oneofs.items():  # the empty request is sent apart: here, one member near the top
            (required if depth <= 1 else optional)[f"oneof {name}"] = st.one_of(members)
        return st.fixed_dictionaries(required, optional=optional).map(lambda values: _message(cls, values))

    def _field(self, owner: Descriptor, fd: FieldDescriptor, depth: int) -> st.SearchStrategy:
        entry = fd.message_type
        if entry is not None and entry.GetOptions().map_entry:
            keys = self._single(entry, entry.fields_by_name["key"], depth)
            values = self._single(entry, entry.fields_by_name["value"], depth + 1)
            return st.dictionaries(keys, values, max_size=3)
        single = self._single(owner, fd, depth + 1 if entry is not None else depth)
        if not fd.is_repeated:
            return single
        if entry is not None:  # few messages, or just over a limit of 16 (ensemble members)
            return _mostly(st.lists(single, min_size=1, max_size=3), st.lists(single, min_size=17, max_size=18))
        short = st.text(max_size=8) if fd.type == FieldDescriptor.TYPE_STRING else single  # (bytes: as `single`)
        return _sized(single, short)

    def _single(self, owner: Descriptor, fd: FieldDescriptor, depth: int) -> st.SearchStrategy:
        if fd.message_type is not None:
            return self.message(fd.message_type, depth)
        if fd.enum_type is not None:
            valid = st.sampled_from([v.number for v in fd.enum_type.values])
            top = max(v.number for v in fd.enum_type.values)
            hostile = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, top + 1, 2**31 - 1]))
            return _mostly(valid, hostile)
        cpp = fd.cpp_type
        if cpp == FieldDescriptor.CPPTYPE_BOOL:
            return st.booleans()
        if cpp in _INT_RANGES:
            low, high = _INT_RANGES[cpp]
            edges = [v for v in (0, 1, -1, 2, 255, 256, 1025, 2**31 - 1, low, high) if low <= v <= high]
            return _mostly(st.integers(1, 8), st.sampled_from(edges), st.integers(low, high))
        if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
            width = 32 if cpp == FieldDescriptor.CPPTYPE_FLOAT else 64
            plausible = st.floats(0.0625, 1.0, width=width)
            return _mostly(plausible, st.sampled_from(_SPECIAL_FLOATS), st.floats(width=width))
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.sampled_from(self.images), st.binary(max_size=64))
        return self._string(owner, fd)

    def _string(self, owner: Descriptor, fd: FieldDescriptor) -> st.SearchStrategy[str]:
        text = st.one_of(st.text(max_size=40), st.sampled_from([*_STRINGS, _HUGE_TEXT]))
        if fd.name == "uri":
            return st.one_of(st.sampled_from(_URIS), text)
        if (
            fd.name.endswith("model")
            or fd.name == "model_name"
            or (owner.name in ("Member", "GetModelRequest", "Model") and fd.name == "name")
        ):
            return st.one_of(st.sampled_from(self.models), st.sampled_from(["", *self.models]), _UNKNOWN_MODEL, text)
        return text


#: Fields a request is about: always set (to hostile values, the empty one included).
_KEY_FIELDS = {"model", "prompt", "messages", "texts", "text", "image", "frame", "members", "name", "job_id"}
#: Admin RPCs that could change the mesh: only ever sent in a form that cannot (a validation-only registration,
#: a name no model has, a base model that does not exist: refused before a job is made).
_FORCED = {
    ("RegisterModelRequest", "validate_only"): st.just(True),
    ("DeregisterModelRequest", "name"): _UNKNOWN_MODEL,
    ("CreateFineTuneJobRequest", "base_model"): st.one_of(st.just(""), _UNKNOWN_MODEL),
}


def _message(cls: type[Message], values: dict) -> Message:
    message = cls()
    for name, value in values.items():
        if name.startswith("oneof "):
            name, value = value
        fd = cls.DESCRIPTOR.fields_by_name[name]
        target = getattr(message, name)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            for key, item in value.items():
                target[key].CopyFrom(item) if isinstance(item, Message) else target.__setitem__(key, item)
        elif fd.is_repeated:
            target.extend(value)
        elif fd.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


@dataclass
class Outcome:
    """How one call ended."""

    code: grpc.StatusCode
    details: str = ""
    replies: int = 0


@dataclass
class Findings:
    """Every call's code, and the calls that broke a rule (with what to reproduce them)."""

    codes: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)
    calls: int = 0


@pytest.fixture(scope="module")
def before(mesh):
    """What the fuzz must leave as it found it: the registry file, the models, the processes (the log so far:
    the fault suite, which may run first on this session's mesh, restarts processes on purpose)."""
    stub = registry_service_pb2_grpc.ModelRegistryServiceStub(mesh[0])
    listed = stub.ListModels(registry_service_pb2.ListModelsRequest(), timeout=30).models
    return {
        "models.yaml": (mesh[2] / "models.yaml").read_bytes(),
        "models": sorted(m.name for m in listed),
        "hosts": {m.name: m.service for m in listed},
        "log_bytes": (mesh[2] / "mesh.log").stat().st_size,
        "jobs": _job_ids(mesh[0]),
    }


def _job_ids(channel: grpc.Channel) -> list[str]:
    stub = finetune_service_pb2_grpc.FineTuneServiceStub(channel)
    return sorted(
        j.job_id for j in stub.ListFineTuneJobs(finetune_service_pb2.ListFineTuneJobsRequest(), timeout=30).jobs
    )


@pytest.mark.parametrize("name", TARGETS)
def test_reflection_lists_every_contract(targets, name):
    """Reflection on each port lists exactly the contracts the generated code says it serves, method by method."""
    target = targets[name]
    gateway = [REGISTRY, *(SERVICE_OF[n] for n in SERVICES), KSERVE]
    expected = gateway if name == "gateway" else [SERVICE_OF[name]]
    listed = set(target.services)
    assert {s.full_name for s in expected} | {"grpc.health.v1.Health"} <= listed
    assert {s for s in listed if not s.startswith(GRPC_SERVICES)} == {s.full_name for s in expected}
    for service in expected:
        reflected = target.services[service.full_name]
        shape = {(m.name, m.input_type.full_name, m.client_streaming, m.server_streaming) for m in service.methods}
        assert {
            (m.name, m.input_type.full_name, m.client_streaming, m.server_streaming) for m in reflected.methods
        } == shape


def invoke(channel: grpc.Channel, method: MethodDescriptor, requests: list[Message], metadata) -> Outcome:
    """Call `method` with `requests` (one unless it streams them); read at most a few replies, then cancel."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    serialize = GetMessageClass(method.input_type).SerializeToString
    deserialize = GetMessageClass(method.output_type).FromString
    kind = ("stream" if method.client_streaming else "unary") + "_" + ("stream" if method.server_streaming else "unary")
    stub = getattr(channel, kind)(path, request_serializer=serialize, response_deserializer=deserialize)
    argument = iter(requests) if method.client_streaming else requests[0]
    try:
        if not method.server_streaming:
            stub(argument, timeout=DEADLINE_S, metadata=metadata)
            return Outcome(grpc.StatusCode.OK)
        call = stub(argument, timeout=DEADLINE_S, metadata=metadata)
        replies = 0
        while replies < MAX_REPLIES:
            watchdog = threading.Timer(STREAM_IDLE_S, call.cancel)
            watchdog.start()
            try:
                next(call)
            except StopIteration:
                return Outcome(grpc.StatusCode.OK, replies=replies)
            finally:
                watchdog.cancel()
            replies += 1
        call.cancel()
        return Outcome(grpc.StatusCode.CANCELLED, "cancelled by the fuzz", replies)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "")  # type: ignore[attr-defined]


def _log_excerpt(folder, request_id: str) -> str:
    """The lines the mesh logged for a request id (the traceback of an INTERNAL follows its line)."""
    lines = (folder / "mesh.log").read_text(errors="replace").splitlines()
    for index, line in enumerate(lines):
        if request_id in line:
            return "\n".join(lines[index : index + 40])
    return "(nothing logged under that request id)"


def _admin_only(path: str) -> bool:
    """Whether the gateway lets only an admin (or the mesh) call this RPC."""
    roles = required_role(path)
    return roles is not None and "user" not in roles


def _judge(path: str, target: str, key: str, requests: list[Message], outcome: Outcome) -> str | None:
    """What is wrong with an outcome, or None."""
    if outcome.code in BUGS:
        return f"{outcome.code.name}: {outcome.details}"
    if "metadata size exceeds" in outcome.details:  # the real answer was lost: its trailers were too big
        return f"{outcome.code.name}: {outcome.details}"
    # At the gateway and the registry (they check keys), a call without the admin key may be refused before
    # anything else (a bogus key always is).
    checks_keys = target in ("gateway", "registry")
    refused = checks_keys and key != "admin" and outcome.code == grpc.StatusCode.UNAUTHENTICATED
    if checks_keys and key != "admin" and _admin_only(path) and not refused:
        return f"an admin RPC without a valid key answered {outcome.code.name}, not UNAUTHENTICATED"
    if enum_violations(requests[0]) and not refused and outcome.code != grpc.StatusCode.INVALID_ARGUMENT:
        return f"an enum outside its enum answered {outcome.code.name}, not INVALID_ARGUMENT: {outcome.details}"
    return None


def _fuzz_method(target: Target, method: MethodDescriptor, hostile: Hostile, folder, findings: Findings) -> None:
    path = f"/{method.containing_service.full_name}/{method.name}"
    third_party = method.containing_service.full_name.startswith(GRPC_SERVICES)
    request = hostile.message(method.input_type)
    messages = st.lists(request, min_size=1, max_size=3) if method.client_streaming else st.tuples(request).map(list)

    def one_call(requests: list[Message], key: str) -> None:
        findings.calls += 1
        request_id = f"fuzz-{target.name}-{findings.calls}"
        outcome = invoke(target.channel, method, requests, call_metadata(key, folder, request_id))
        known = (
            target.name == "gateway"
            and method.client_streaming
            and outcome.code == grpc.StatusCode.INTERNAL
            and outcome.details == KNOWN_STREAM_LOSS
        )
        findings.codes[f"{outcome.code.name} (known: grpc/grpc#36066)" if known else outcome.code.name] += 1
        if known:
            return
        wrong = _judge(path, target.name, key, requests, outcome)
        if wrong is not None and len(findings.bad) < 20:
            shown = "\n---\n".join(text_format.MessageToString(r, as_utf8=True)[:1500] for r in requests)
            findings.bad.append(
                f"{target.name} {path} (key: {key}, request id {request_id}): {wrong}\n{shown}\n"
                f"{_log_excerpt(folder, request_id) if outcome.code in BUGS else ''}"
            )

    # Two requests every RPC gets: the empty one, and one with every enum out of range where it has enums.
    one_call([GetMessageClass(method.input_type)()], "none")
    wrong = hostile.wrong_enums(method.input_type)
    if wrong is not None:
        one_call([wrong], "admin" if target.name == "gateway" and _admin_only(path) else "none")
    examples = max(1, EXAMPLES // 3) if third_party else EXAMPLES

    @seed(zlib.crc32(f"{SEED}{target.name} {path}".encode()))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # a finding is recorded, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(requests=messages, key=st.sampled_from(KEYS))
    def fuzz(requests: list[Message], key: str) -> None:
        one_call(requests, key)

    fuzz()


@pytest.mark.parametrize("name", TARGETS)
def test_every_rpc_answers_hostile_requests_with_a_clear_status(mesh, targets, before, name):
    """Hypothesis-made requests to every method reflection lists: no UNKNOWN or INTERNAL; admin RPCs need a key;
    an enum number outside its enum is INVALID_ARGUMENT."""
    target, folder = targets[name], mesh[2]
    # A service port mostly gets the names of its own models (else most calls would stop at MODEL_NOT_FOUND).
    own = [model for model, host in before["hosts"].items() if host == name]
    hostile, findings = Hostile([*(own or before["models"]), "auto"]), Findings()
    started = time.monotonic()
    for service in target.services.values():
        for method in service.methods:
            _fuzz_method(target, method, hostile, folder, findings)
    took = time.monotonic() - started
    print(f"\nfuzz {name}: {findings.calls} calls in {took:.1f} s: {dict(sorted(findings.codes.items()))}")
    assert not findings.bad, "\n\n".join(findings.bad)


def _frames(*frames: Message) -> Iterator[Message]:
    yield from frames


@pytest.mark.parametrize("name", ["gateway", "vision"])
def test_a_bad_frame_mid_stream_ends_the_stream_with_invalid_argument(mesh, targets, name):
    """A stream's later message is checked as it arrives: the answer is INVALID_ARGUMENT, at the gateway (which
    forwards the stream) as at the service."""
    stub = targets[name].channel.stream_stream(
        "/aisemble.vision.v1.VisionService/StreamDetect",
        request_serializer=vision_service_pb2.StreamDetectRequest.SerializeToString,
        response_deserializer=vision_service_pb2.StreamDetectResponse.FromString,
    )
    good = vision_service_pb2.StreamDetectRequest(model="nudenet", frame={"data": _tiny_png()}, frame_index=1)
    bad = vision_service_pb2.StreamDetectRequest(model="nudenet", frame={"data": _tiny_png()}, backpressure_policy=7)
    call = stub(_frames(good, bad, good), timeout=30)
    with pytest.raises(grpc.RpcError) as caught:
        list(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert re.search(r"backpressure_policy: 7 is not a value", caught.value.details())


@pytest.mark.parametrize("name", ["gateway", "finetune"])
def test_a_bad_header_mid_upload_is_invalid_argument(mesh, targets, name):
    """The same for a client stream (an upload, with the admin key at the gateway)."""
    stub = finetune_service_pb2_grpc.FineTuneServiceStub(targets[name].channel)
    good = finetune_service_pb2.UploadTrainingFileRequest(header={"filename": "a.jsonl", "task": 1, "size_bytes": 33})
    bad = finetune_service_pb2.UploadTrainingFileRequest(header={"filename": "a.jsonl", "task": 9, "size_bytes": 33})
    with pytest.raises(grpc.RpcError) as caught:
        stub.UploadTrainingFile(_frames(good, bad), timeout=30, metadata=call_metadata("admin", mesh[2], "fuzz-upload"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "header.task: 9 is not a value" in caught.value.details()


def test_the_mesh_is_unharmed(mesh, targets, before):
    """After the fuzz: every server SERVING, every model SERVING, no process restarted, the registry as it was,
    no fine-tuning job made by the fuzz."""
    folder = mesh[2]
    for target in targets.values():
        assert wait_healthy(target.address, timeout_s=10, peer=target.peer), f"{target.name} is not SERVING"
    registry = registry_service_pb2_grpc.ModelRegistryServiceStub(mesh[0])
    models = registry.ListModels(registry_service_pb2.ListModelsRequest(), timeout=30).models
    assert sorted(m.name for m in models) == before["models"]
    assert {m.name: m.health for m in models} == dict.fromkeys(
        before["models"], registry_service_pb2.MODEL_HEALTH_SERVING
    )
    assert (folder / "models.yaml").read_bytes() == before["models.yaml"]
    assert _job_ids(mesh[0]) == before["jobs"]
    with (folder / "mesh.log").open("rb") as log:
        log.seek(before["log_bytes"])
        assert b"restarting in" not in log.read(), "a process of the mesh died during the fuzz"
