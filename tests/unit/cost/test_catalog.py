from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from zeroserve.cost.catalog import (
    DEFAULT_CATALOG_PATH,
    Catalog,
    CatalogError,
    PriceOverride,
    apply_overrides,
    load_catalog,
    parse_catalog,
    parse_override,
)
from zeroserve.cost.evaluate import estimate
from zeroserve.cost.profile import WorkloadProfile

from .conftest import TODAY

REQUIRED_TARGETS = [
    "aws.lambda.x86",
    "aws.lambda.arm64",
    "aws.sagemaker.serverless",
    "aws.sagemaker.realtime",
    "aws.sagemaker.async",
    "aws.fargate",
    "aws.eks",
    "aws.ec2.ondemand",
    "aws.ec2.spot",
    "gcp.cloudrun",
    "gcp.cloudrun.gpu",
    "modal",
    "runpod.serverless",
]


def raw() -> dict[str, Any]:
    data = yaml.safe_load(DEFAULT_CATALOG_PATH.read_text())
    assert isinstance(data, dict)
    return data


def test_packaged_catalog_has_every_target_with_provenance(catalog: Catalog) -> None:
    ids = {t.id for t in catalog.targets}
    assert set(REQUIRED_TARGETS) <= ids
    assert sum(1 for t in catalog.targets if t.billing_model == "per_token") >= 4
    assert catalog.hours_per_month() == 730
    for t in catalog.targets:
        for p in t.prices:
            assert catalog.source_url(p.source).startswith("https://"), (t.id, p.meter)
            assert p.as_of.year >= 2025 and p.confidence
    # Floats are read as exact decimals, not binary approximations.
    lam = catalog.price(catalog.target("aws.lambda.x86"), "gb_second")
    assert lam.tiers[0].usd == Decimal("0.0000166667")


def test_missing_field_fails_loudly() -> None:
    data = raw()
    del data["targets"][1]["prices"][0]["as_of"]
    with pytest.raises(CatalogError, match=r"targets\.1\.prices\.0\.as_of: Field required"):
        parse_catalog(data)


def test_unknown_field_and_unknown_source_fail() -> None:
    data = raw()
    data["targets"][1]["prices"][0]["usd_typo"] = 1
    with pytest.raises(CatalogError, match="usd_typo"):
        parse_catalog(data)
    data = raw()
    data["targets"][1]["prices"][0]["source"] = "nowhere"
    with pytest.raises(CatalogError, match="unknown source 'nowhere'"):
        parse_catalog(data)


def test_own_catalog_file(tmp_path: Path) -> None:
    data = raw()
    data["catalog"]["hours_per_month"] = 720
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_catalog(path).hours_per_month() == 720
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "missing.yaml")


def test_parse_override() -> None:
    ov = parse_override("aws.sagemaker.realtime:instance_hour:ml.m5.xlarge=0.20")
    assert (ov.target, ov.meter, ov.option, ov.usd) == (
        "aws.sagemaker.realtime",
        "instance_hour",
        "ml.m5.xlarge",
        Decimal("0.20"),
    )
    assert parse_override("aws.fargate=-20%").discount_pct == Decimal(20)
    with pytest.raises(CatalogError, match="cannot read price override"):
        parse_override("nonsense")


def test_price_override_and_discount_change_the_estimate(catalog: Catalog) -> None:
    profile = WorkloadProfile(requests_per_month=1000, duration_s=0.1)
    pinned = apply_overrides(
        catalog, [parse_override("aws.sagemaker.realtime:instance_hour:ml.m5.xlarge=0.20")], TODAY
    )
    e = estimate(pinned, profile, "aws.sagemaker.realtime", "ml.m5.xlarge", today=TODAY)
    # 1 instance x 730 h x $0.20/h = $146.00
    assert e.monthly_usd == 146.00
    assert e.line_items[0].confidence == "user" and e.line_items[0].as_of == TODAY.isoformat()
    # 20% off Fargate: 1 task x 1 vCPU x 730 h x $0.04048 x 0.8 = $23.64 (was $29.55)
    off = apply_overrides(
        catalog, [PriceOverride(target="aws.fargate", discount_pct=Decimal(20))], TODAY
    )
    vcpu = estimate(off, profile, "aws.fargate", today=TODAY).line_items[0]
    assert (vcpu.name, vcpu.usd) == ("vCPU", 23.64)
    # The async target takes its instance prices from the real-time one: overridden too.
    assert (
        estimate(
            pinned,
            profile.model_copy(update={"allow_async": True, "cold_start_fraction": 0.0}),
            "aws.sagemaker.async",
            "ml.m5.xlarge",
            today=TODAY,
        )
        .line_items[0]
        .unit_usd
        == 0.20
    )


def test_override_that_matches_nothing_is_refused(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match="matches no price"):
        apply_overrides(catalog, [parse_override("aws.fargate:instance_hour=1")], TODAY)
    with pytest.raises(CatalogError, match="unknown target"):
        apply_overrides(catalog, [parse_override("aws.nothing=1")], TODAY)
