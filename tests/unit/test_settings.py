from pathlib import Path

import pytest

from zeroserve.settings import Settings, is_loopback


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.1.2.3")


def test_binding_beyond_loopback_needs_keys() -> None:
    with pytest.raises(ValueError, match="ADMIN_API_KEYS"):
        Settings(host="0.0.0.0")
    settings = Settings(host="0.0.0.0", admin_api_keys=["s3cret-s3cret-s3cret"])
    assert settings.auth_enabled
    assert settings.public_dict()["admin_api_keys"] == ["***"]


def test_env_and_yaml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "zs.yaml"
    config.write_text("port: 9100\nmax_payload_mb: 2\n")
    monkeypatch.setenv("ZEROSERVE_CONFIG", str(config))
    monkeypatch.setenv("ZEROSERVE_PORT", "9200")
    settings = Settings()
    assert settings.port == 9200  # the environment wins over the file
    assert settings.max_payload_bytes == 2 * 1024 * 1024
    assert settings.resolved_database_url.startswith("sqlite:///")
