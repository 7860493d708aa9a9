"""Registry writes that name files outside the model store, or endpoints and secrets the provider policy refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from aisemble.config.models import ModelSpec, load_models
from aisemble.config.security import ProviderPolicy
from aisemble.errors import Code, FailedPreconditionError, InvalidArgumentError
from aisemble.store.builder import StoreBuilder
from aisemble.store.model_store import ModelStore
from services.registry.store import ModelRegistry, provider_violations, store_path_violations, write_models_file
from services.vision.backends.artifacts import model_files, verify_store_file


def _spec(model_path: str = "art", provider: str = "ultralytics", **fields) -> ModelSpec:
    task = "text-generation" if provider == "openai" else "object-detection"
    service = "llm" if provider == "openai" else "vision"
    return ModelSpec(name="m", task=task, provider=provider, service=service, model_path=model_path, **fields)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store root with one artifact folder (art/weights.pt), and a folder outside it."""
    store = tmp_path / "store"
    (store / "art").mkdir(parents=True)
    (store / "art" / "weights.pt").write_bytes(b"w")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "payload.pt").write_bytes(b"p")
    return store


def _fields(spec: ModelSpec, root: Path | None) -> list[str]:
    return [v.field for v in store_path_violations(spec, root)]


@pytest.mark.parametrize(
    "value",
    ["/etc/passwd", "/abs/payload.pt", "../outside/payload.pt", "a/../../b", "~/payload.pt", "~root", "..\\x.pt"],
)
def test_path_like_params_are_refused_with_their_field(root, value):
    violations = store_path_violations(_spec(params={"weights": value}), root)
    assert [v.field for v in violations] == ["model.params.weights"]
    assert "model store" in violations[0].description and repr(value) in violations[0].description
    # Without a store root the lexical rules still hold.
    assert _fields(_spec(params={"weights": value}), None) == ["model.params.weights"]


def test_plain_names_and_non_path_strings_pass(root):
    params = {
        "weights": "weights.pt",
        "config": "missing.yaml",
        "template": "This text is about {label}...",
        "class_names": ["person", "N/A"],
        "prompt_api": "chat",
        "score_threshold": 0.25,
        "nested": {"file": "sub/dir/x.onnx"},
    }
    assert store_path_violations(_spec(params=params), root) == []


def test_nested_params_name_the_exact_field(root):
    params = {"files": ["ok.onnx", "/etc/shadow"], "extra": {"tokenizer": "../t.json"}}
    assert _fields(_spec(params=params), root) == ["model.params.files[1]", "model.params.extra.tokenizer"]


def test_symlinks_out_of_the_store_are_refused_from_the_model_folder_and_the_root(root):
    (root / "art" / "evil.pt").symlink_to(root.parent / "outside" / "payload.pt")
    (root / "out").symlink_to(root.parent / "outside")
    assert _fields(_spec(params={"weights": "evil.pt"}), root) == ["model.params.weights"]
    assert _fields(_spec(params={"weights": "out/payload.pt"}), root) == ["model.params.weights"]
    assert _fields(_spec(model_path="out"), root) == ["model.model_path"]
    assert _fields(_spec(model_path="out/payload.pt"), root) == ["model.model_path"]
    # A symlink that stays inside the store is a file of the store.
    (root / "art" / "alias.pt").symlink_to(root / "art" / "weights.pt")
    assert _fields(_spec(params={"weights": "alias.pt"}), root) == []


@pytest.mark.parametrize("model_path", ["/abs", "../x", "~/x", "art/../../x"])
def test_model_path_escapes_are_refused(root, model_path):
    assert _fields(_spec(model_path=model_path), root) == ["model.model_path"]


async def test_register_refuses_with_invalid_argument_and_writes_nothing(root, tmp_path):
    path = tmp_path / "models.yaml"
    write_models_file(path, [])
    before = path.read_bytes()
    registry = ModelRegistry(path, root)
    with pytest.raises(InvalidArgumentError) as caught:
        await registry.register(_spec(params={"weights": "/abs/payload.pt", "config": "../c.yaml"}))
    error = caught.value
    assert error.code == Code.INVALID_ARGUMENT and error.reason == "PATH_OUTSIDE_STORE"
    assert [v.field for v in error.field_violations] == ["model.params.weights", "model.params.config"]
    assert path.read_bytes() == before and registry.find("m") is None
    with pytest.raises(InvalidArgumentError):  # validate_only is checked the same way
        await registry.register(_spec(params={"weights": "/abs/payload.pt"}), validate_only=True)
    await registry.register(_spec(params={"weights": "weights.pt"}))
    assert registry.get("m").params["weights"] == "weights.pt"


async def test_model_path_missing_from_the_store_is_still_failed_precondition(root, tmp_path):
    path = tmp_path / "models.yaml"
    write_models_file(path, [])
    with pytest.raises(FailedPreconditionError) as caught:
        await ModelRegistry(path, root).register(_spec(model_path="not-built"))
    assert caught.value.reason == "ARTIFACT_MISSING"


# --- providers ---


def _openai(endpoint: str = "", **params) -> ModelSpec:
    return _spec(model_path="", provider="openai", endpoint=endpoint, params=params)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/v1",
        "http://127.8.9.10/v1",
        "https://localhost/v1",
        "http://LOCALHOST:1/v1",
        "http://api.localhost:9/v1",
        "http://[::1]:8080/v1",
    ],
)
def test_loopback_endpoints_are_always_allowed(url):
    assert ProviderPolicy().endpoint_problem(url) is None
    assert provider_violations(_openai(url), ProviderPolicy()) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/v1",
        "http://0.0.0.0:80/v1",  # reaches this machine on Linux, but is no loopback address: refused too
        "https://api.openai.com/v1",
        "http://127.0.0.1.example.com/v1",
        "http://localhost.example.com/v1",
        "http://127.0.0.1@example.com/v1",  # userinfo: the host is example.com
        "http://user:pw@127.0.0.1/v1",  # credentials in the URL
        "ftp://127.0.0.1/v1",
        "file:///etc/passwd",
        "http:///v1",
        "http://example.com:99999/v1",
        "http://2130706433/v1",  # 127.0.0.1 as a number: not parsed as loopback, so refused
        "http://[::ffff:7f00:1]/v1",
        "http://exfil.invalid/v1",
    ],
)
def test_other_endpoints_are_refused_by_default(url):
    problem = ProviderPolicy().endpoint_problem(url)
    assert problem is not None
    assert [v.field for v in provider_violations(_openai(url), ProviderPolicy())] == ["model.endpoint"]


def test_endpoint_patterns_match_scheme_host_port_and_subdomains():
    policy = ProviderPolicy(endpoints=("https://api.openai.com", "https://*.example.com:8443", "http://gpu.lan:*"))
    assert policy.endpoint_problem("https://api.openai.com/v1") is None
    assert policy.endpoint_problem("https://API.OpenAI.com:443/v1") is None
    assert policy.endpoint_problem("http://api.openai.com/v1") is not None  # other scheme
    assert policy.endpoint_problem("https://api.openai.com:8443/v1") is not None  # other port
    assert policy.endpoint_problem("https://evil-api.openai.com/v1") is not None
    assert policy.endpoint_problem("https://api.openai.com.evil.com/v1") is not None
    assert policy.endpoint_problem("https://a.b.example.com:8443/v1") is None
    assert policy.endpoint_problem("https://example.com:8443/v1") is not None  # `*.` means a subdomain
    assert policy.endpoint_problem("https://evilexample.com:8443/v1") is not None
    assert policy.endpoint_problem("http://gpu.lan:1234/v1") is None
    assert policy.endpoint_problem("https://gpu.lan:1234/v1") is not None


def test_api_key_env_must_be_allowed_default_included():
    assert provider_violations(_openai("http://127.0.0.1:1/v1", api_key_env="OPENAI_API_KEY"), ProviderPolicy()) == []
    assert provider_violations(_openai("http://127.0.0.1:1/v1"), ProviderPolicy()) == []  # default OPENAI_API_KEY
    for name in ("AWS_SECRET_ACCESS_KEY", "openai_api_key", "HOME", ""):
        violations = provider_violations(_openai("http://127.0.0.1:1/v1", api_key_env=name), ProviderPolicy())
        assert [v.field for v in violations] == ["model.params.api_key_env"], name
    narrowed = ProviderPolicy(api_key_envs=("MY_GATEWAY_KEY",))
    assert provider_violations(_openai(api_key_env="MY_GATEWAY_KEY"), narrowed) == []
    assert [v.field for v in provider_violations(_openai(), narrowed)] == ["model.params.api_key_env"]
    not_text = provider_violations(_openai(api_key_env=5), ProviderPolicy())
    assert [v.field for v in not_text] == ["model.params.api_key_env"]


async def test_register_checks_the_policy_it_was_given(tmp_path):
    path = tmp_path / "models.yaml"
    write_models_file(path, [])
    strict = ModelRegistry(path, None)
    with pytest.raises(InvalidArgumentError) as caught:
        await strict.register(_openai("https://api.example.com/v1", api_key_env="SOME_SECRET"))
    assert caught.value.reason == "PROVIDER_NOT_ALLOWED"
    assert [v.field for v in caught.value.field_violations] == ["model.endpoint", "model.params.api_key_env"]
    allowing = ModelRegistry(path, None, ProviderPolicy(("https://api.example.com",), ("SOME_SECRET",)))
    await allowing.register(_openai("https://api.example.com/v1", api_key_env="SOME_SECRET"))
    assert "m" in load_models(path)


def test_the_shipped_registry_loads_unchecked_and_passes_the_checks(tmp_path):
    """configs/models.yaml is trusted configuration, yet every entry in it would also pass a write."""
    registry = ModelRegistry(Path(__file__).resolve().parents[2] / "configs" / "models.yaml")
    for spec in registry.all():
        assert store_path_violations(spec, tmp_path) == [], spec.name
        assert provider_violations(spec, ProviderPolicy()) == [], spec.name


# --- the service checks again ---


def _store(root: Path) -> ModelStore:
    return ModelStore(root)


def test_service_side_pick_refuses_names_outside_the_model_folder(root):
    (root / "art" / "evil.pt").symlink_to(root.parent / "outside" / "payload.pt")
    files = model_files(_spec(), _store(root))
    assert files.pick(_spec(), "weights", "weights.pt", "pytorch") == root / "art" / "weights.pt"
    for name in ("/abs/payload.pt", str(root.parent / "outside" / "payload.pt"), "../outside/payload.pt", "evil.pt"):
        with pytest.raises(FailedPreconditionError) as caught:
            files.pick(_spec(), "weights", name, "pytorch")
        assert caught.value.reason == "MODEL_FILE_OUTSIDE_STORE" and "params.weights" in caught.value.message
    for model_path in ("/abs", "../outside"):
        with pytest.raises(FailedPreconditionError) as caught:
            model_files(_spec(model_path=model_path), _store(root))
        assert caught.value.reason == "MODEL_FILE_OUTSIDE_STORE"


def test_service_side_verification_needs_a_manifest_and_its_checksum(root, tmp_path):
    store = _store(root)
    with pytest.raises(FailedPreconditionError) as caught:
        verify_store_file(_spec(), store, root / "art" / "weights.pt")
    assert caught.value.reason == "MODEL_FILE_UNVERIFIED" and "aisemble models import" in caught.value.message
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "best.pt").write_bytes(b"weights")
    StoreBuilder(root, {}).import_files("mine", tmp_path / "own")
    assert verify_store_file(_spec(), store, root / "mine" / "best.pt") == root / "mine" / "best.pt"
    (root / "mine" / "extra.pt").write_bytes(b"x")
    with pytest.raises(FailedPreconditionError) as caught:
        verify_store_file(_spec(), store, root / "mine" / "extra.pt")
    assert caught.value.reason == "MODEL_FILE_UNVERIFIED" and "does not list extra.pt" in caught.value.message
    (root / "mine" / "best.pt").write_bytes(b"WEIGHTS")  # same size, other bytes
    with pytest.raises(FailedPreconditionError) as caught:
        verify_store_file(_spec(), store, root / "mine" / "best.pt")
    assert caught.value.reason == "MODEL_FILE_CHECKSUM_MISMATCH"
