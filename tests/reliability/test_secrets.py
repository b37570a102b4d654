"""Issue 15, item 1: an API key given as ``os.environ/NAME`` never shows in a repr, a message or a file we write."""

from __future__ import annotations

import logging

import pytest
import yaml

from fusion_dspy.errors import ConfigurationError, EndpointError, first_line
from fusion_dspy.lm.endpoints import Endpoint, Pool, endpoints_from_model_list, load_pool, model_list_of

SENTINEL = "sk-SENTINEL-7f3a9c1e55d04b2b"
VAR = "FD_TEST_SENTINEL_KEY"


def _pool_file(tmp_path, key: str = f"os.environ/{VAR}"):
    doc = {"model_list": [{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1",
                                                                 "api_key": key}}]}
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_resolved_key_shows_in_no_repr_and_is_written_back_as_its_reference(tmp_path, monkeypatch):
    monkeypatch.setenv(VAR, SENTINEL)
    pool = load_pool(_pool_file(tmp_path))
    ep = pool.endpoints["m"]
    for text in (repr(ep), str(ep), repr(pool), str(pool), f"{ep.api_key}", repr(ep.api_key)):
        assert SENTINEL not in text
    assert f"os.environ/{VAR}" in repr(ep)
    written = yaml.safe_dump({"model_list": model_list_of(pool.endpoints.values())})
    assert SENTINEL not in written and f"os.environ/{VAR}" in written
    # the request still carries the real key
    lm = ep.lm()
    assert lm.kwargs["api_key"] == SENTINEL


def test_a_literal_key_is_never_written_to_a_file():
    ep = endpoints_from_model_list([{"model_name": "m", "litellm_params": {"model": "openai/m", "api_base": "http://h/v1",
                                                                           "api_key": SENTINEL}}])["m"]
    assert SENTINEL not in repr(ep)
    assert SENTINEL not in yaml.safe_dump(model_list_of([ep]))
    assert "api_key" not in model_list_of([ep])[0]["litellm_params"]


def test_a_missing_environment_variable_is_a_configuration_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.delenv(VAR, raising=False)
    with pytest.raises(ConfigurationError, match=VAR):
        load_pool(_pool_file(tmp_path))
    with pytest.raises(ConfigurationError, match=VAR):
        Endpoint("m", "openai/m", api_base="http://h/v1", api_key=f"os.environ/{VAR}")


def test_messages_and_log_lines_never_carry_a_key(monkeypatch, caplog):
    monkeypatch.setenv(VAR, SENTINEL)
    Endpoint("m", "openai/m", api_base="http://h/v1", api_key=f"os.environ/{VAR}")  # the key is now known to be secret
    exc = EndpointError(f"server said: invalid key {SENTINEL}")
    assert SENTINEL not in first_line(exc)
    from fusion_dspy.errors import install_log_redaction, redact

    assert SENTINEL not in redact(f"Bearer {SENTINEL}")

    install_log_redaction()
    with caplog.at_level(logging.INFO):
        logging.getLogger("fusion_dspy.test").info("calling with %s", SENTINEL)
    assert SENTINEL not in caplog.text


def test_pool_repr_with_a_key_given_directly(monkeypatch):
    ep = Endpoint("m", "openai/m", api_base="http://h/v1", api_key=SENTINEL)
    assert SENTINEL not in repr(Pool({"m": ep}, ("m",)))
