"""Config: YAML, environment overrides, ${VAR} expansion, and precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_ai_router.config import load_settings
from local_ai_router.types import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "local-ai-router.yaml"
    p.write_text(text)
    return p


def test_defaults_without_file(lar_home: Path):
    s = load_settings(env={"LAR_HOME": str(lar_home)})
    assert s.server.port == 8012 and s.server.host == "127.0.0.1"
    assert s.storage.url == f"sqlite+aiosqlite:///{lar_home}/lar.db"
    assert s.backends == [] and s.source == "(built-in defaults)"


def test_yaml_file_found_in_cwd_and_expansion(tmp_path: Path):
    write(
        tmp_path,
        """
server: {port: 9100}
backends:
  - name: gpu
    url: http://${GPU_HOST:-127.0.0.1}:8000/v1
    kind: vllm
    api_key_env: GPU_KEY
aliases: {small: qwen-7b}
""",
    )
    s = load_settings(env={"GPU_KEY": "sekret"})
    assert s.server.port == 9100
    assert s.backends[0].url == "http://127.0.0.1:8000/v1"
    s2 = load_settings(env={"GPU_HOST": "10.0.0.5"})
    assert s2.backends[0].url == "http://10.0.0.5:8000/v1"


def test_secret_is_read_from_named_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    write(tmp_path, "backends: [{name: a, url: 'http://127.0.0.1:1/v1', api_key_env: MY_KEY}]\n")
    monkeypatch.setenv("MY_KEY", "abc")
    assert load_settings().backends[0].api_key() == "abc"


def test_env_overrides_nested_and_list_index(tmp_path: Path):
    write(tmp_path, "backends: [{name: a, url: 'http://127.0.0.1:1/v1'}]\n")
    s = load_settings(
        env={
            "LAR_SERVER__PORT": "9000",
            "LAR_SERVER__REQUIRE_API_KEY": "true",
            "LAR_BACKENDS__0__PRIORITY": "5",
            "LAR_AGENT__PERMISSIONS__MODE": "plan",
            "LAR_ROUTING__AVAILABILITY_BACKENDS": "[a]",
        }
    )
    assert s.server.port == 9000 and s.server.require_api_key is True
    assert s.backends[0].priority == 5
    assert s.agent.permissions.mode == "plan"
    assert s.routing.availability_backends == ["a"]


def test_explicit_config_path_missing():
    with pytest.raises(ConfigError, match=r"file nowhere\.yaml.*file not found"):
        load_settings("nowhere.yaml")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("server: {port: 99999}\n", "server.port", "less than or equal to 65535"),
        ("server: {prot: 1}\n", "server.prot", "unknown key"),
        ("backends: [{name: a}]\n", "backends[0]", "url is required"),
        ("backends: [{name: a, url: 'ftp://x'}]\n", "backends[0]", "must start with http"),
        (
            "backends: [{name: a, url: 'http://x'}, {name: a, url: 'http://y'}]\n",
            "backends",
            "used twice",
        ),
        (
            "backends: [{name: a, url: 'http://x', kind: tgi}]\n",
            "backends[0].kind",
            "Input should be",
        ),
        (
            "routing: {availability_backends: [ghost]}\nbackends: [{name: a, url: 'http://x'}]\n",
            None,
            "not a backend",
        ),
        ("agent: {permissions: {mode: yolo}}\n", "agent.permissions.mode", "Input should be"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str | None, problem: str
):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings()
    exc = info.value
    assert exc.file == str(path)
    if key:
        assert exc.key == key
    assert problem in str(exc)


def test_invalid_yaml_reports_line(tmp_path: Path):
    write(tmp_path, "server:\n  port: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_settings()


def test_unset_variable_without_default(tmp_path: Path):
    write(tmp_path, "backends: [{name: a, url: 'http://${NOPE_HOST}/v1'}]\n")
    with pytest.raises(ConfigError, match=r"\$\{NOPE_HOST\} is not set") as info:
        load_settings(env={})
    assert info.value.key == "backends[0].url"


def test_unknown_env_section_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="LAR_SERVR__PORT names unknown section"):
        load_settings(env={"LAR_SERVR__PORT": "1"})


def test_top_level_must_be_mapping(tmp_path: Path):
    write(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings()
