"""H2/H3/H4/M12: URLs a client names are checked against the operator's allowlist."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroserve.egress import EgressPolicy, layers
from zeroserve.errors import BadRequest, Forbidden
from zeroserve.settings import Settings


def fake_dns(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def resolve(host: str, _port: int) -> list[str]:
        return table[host]

    return resolve


@pytest.fixture
def policy(tmp_path: Path) -> EgressPolicy:
    settings = Settings(data_dir=tmp_path / "data", egress_buckets=["inputs"])
    dns = fake_dns(
        {
            "hooks.example.com": ["93.184.216.34"],
            "rebind.example.com": ["93.184.216.34", "127.0.0.1"],
            "metadata.internal": ["169.254.169.254"],
            "localhost": ["127.0.0.1", "::1"],
            "v6.example.com": ["::ffff:10.0.0.5"],
        }
    )
    return EgressPolicy.from_settings(settings, [tmp_path / "data"], resolver=dns)


def test_layers_split_every_chained_filesystem() -> None:
    assert [(x.scheme, x.location) for x in layers("simplecache::file:///etc/passwd")] == [
        ("simplecache", None),
        ("file", "/etc/passwd"),
    ]
    assert [x.scheme for x in layers("zip://a.csv::s3://b/c.zip")] == ["zip", "s3"]
    assert layers("/etc/passwd")[0].scheme == "file"
    assert layers("staged.json")[0].scheme == "file"


@pytest.mark.parametrize(
    "uri",
    [
        "simplecache::file:///etc/passwd",
        "blockcache::file:///etc/hostname",
        "filecache::file:///etc/hostname",
        "http://127.0.0.1:8300/internal/admin?token=1",
        "http://169.254.169.254/latest/meta-data/",
        "https://hooks.example.com/x.json",  # http(s) is not a default input scheme
        "memory://x",
        "ftp://example.com/x",
        "foo://bar",
        "data:,x",
    ],
)
def test_refused_schemes_and_chains(policy: EgressPolicy, uri: str) -> None:
    with pytest.raises(Forbidden) as info:
        policy.check_uri(uri)
    assert "ZEROSERVE_EGRESS_SCHEMES" in info.value.message


def test_chain_of_allowed_schemes_still_checks_the_inner_path(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", egress_schemes=["file", "simplecache"])
    policy = EgressPolicy.from_settings(settings, [tmp_path / "data"])
    (tmp_path / "data").mkdir()
    policy.check_uri(f"simplecache::file://{tmp_path}/data/x.json")
    with pytest.raises(Forbidden, match="ZEROSERVE_ASYNC_INPUT_ROOTS"):
        policy.check_uri("simplecache::file:///etc/passwd")


@pytest.mark.parametrize(
    "uri", ["file:///etc/passwd", "/etc/passwd", "local:///etc/passwd", "../../../../etc/passwd"]
)
def test_local_paths_outside_the_roots(policy: EgressPolicy, uri: str) -> None:
    with pytest.raises(Forbidden, match="outside the directories"):
        policy.check_uri(uri)


def test_symlink_out_of_the_root_is_refused(policy: EgressPolicy, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link.json").symlink_to("/etc/hostname")
    with pytest.raises(Forbidden):
        policy.check_uri(str(tmp_path / "data" / "link.json"))
    policy.check_uri(str(tmp_path / "data" / "inside.json"))


def test_buckets_need_the_allowlist(policy: EgressPolicy) -> None:
    policy.check_uri("s3://inputs/jobs/1.json")
    with pytest.raises(Forbidden, match="ZEROSERVE_EGRESS_BUCKETS"):
        policy.check_uri("s3://someone-elses-bucket/secret.json")
    with pytest.raises(Forbidden, match="ZEROSERVE_EGRESS_SCHEMES"):
        policy.check_uri("zip://a.json::s3://other/b.zip")


def test_the_artifact_store_bucket_is_allowed(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, artifact_url="s3://zs-artifacts/prefix")
    EgressPolicy.from_settings(settings, [tmp_path]).check_uri("s3://zs-artifacts/async/x.json")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9000/hook",
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.internal/",
        "http://[::1]:80/",
        "http://10.1.2.3/",
        "http://v6.example.com/",
        "http://rebind.example.com/",  # one private answer is enough to refuse
    ],
)
def test_webhooks_to_private_addresses_are_refused(policy: EgressPolicy, url: str) -> None:
    with pytest.raises(Forbidden, match="ZEROSERVE_EGRESS_PRIVATE_NETWORKS"):
        policy.http_target(url)


def test_public_webhook_is_pinned_to_the_checked_address(policy: EgressPolicy) -> None:
    target = policy.http_target("https://hooks.example.com:8443/done?x=1")
    assert target.url == "https://93.184.216.34:8443/done?x=1"
    assert target.headers == {"host": "hooks.example.com:8443"}
    assert target.extensions == {"sni_hostname": "hooks.example.com"}


def test_operator_can_allow_a_private_network(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, egress_private_networks=["127.0.0.0/8"])
    policy = EgressPolicy.from_settings(settings, [tmp_path])
    assert policy.http_target("http://127.0.0.1:9/x").address == "127.0.0.1"
    with pytest.raises(Forbidden):
        policy.http_target("http://169.254.169.254/")


def test_host_allowlist(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, egress_hosts=["*.example.com"])
    policy = EgressPolicy.from_settings(
        settings, [tmp_path], resolver=fake_dns({"a.example.com": ["93.184.216.34"]})
    )
    policy.http_target("https://a.example.com/x")
    with pytest.raises(Forbidden, match="ZEROSERVE_EGRESS_HOSTS"):
        policy.http_target("https://evil.test/x")


def test_malformed_urls_are_bad_requests(policy: EgressPolicy) -> None:
    for url in ("ftp://x/y", "http:///nohost", "https://user:pw@hooks.example.com/"):
        with pytest.raises(BadRequest):
            policy.http_target(url)
    with pytest.raises(BadRequest):
        policy.check_uri("")
