"""The registry's behaviour, as a class each database's tests subclass.

A subclass provides the ``registry`` fixture: ``tests/unit/registry/test_registry.py`` runs
it on SQLite in-process, ``tests/integration/test_registry_postgres.py`` on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroserve.errors import BadRequest, EndpointNotFound, ModelNotFound, VersionNotFound
from zeroserve.registry.registry import Registry
from zeroserve.types import EndpointSpec, Signature, Stage, TensorSpec, VariantSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 3])],
    outputs=[TensorSpec(name="prediction", dtype="float32", shape=[-1])],
)


def artifact(tmp_path: Path, content: str) -> Path:
    d = tmp_path / f"art-{content}"
    d.mkdir()
    (d / "model.onnx").write_text(content)
    return d


class RegistryContract:
    """What a registry must do on any database; subclasses define the ``registry`` fixture."""

    def test_versions_are_numbered_and_artifacts_stored(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        v1 = registry.register_version(
            "fraud", artifact(tmp_path, "a"), flavor="onnx", signature=SIG
        )
        v2 = registry.register_version(
            "fraud", artifact(tmp_path, "b"), flavor="onnx", signature=SIG
        )
        assert (v1.version, v2.version) == (1, 2)
        assert (registry.artifact_dir(v1) / "model.onnx").read_text() == "a"
        assert (registry.artifact_dir(v2) / "model.onnx").read_text() == "b"
        model = registry.get_model("fraud")
        assert [v.version for v in model.versions] == [1, 2]
        assert model.versions[0].signature == SIG

    def test_stages_archive_the_previous_holder(self, registry: Registry, tmp_path: Path) -> None:
        for c in "abc":
            registry.register_version("m", artifact(tmp_path, c), flavor="onnx", signature=SIG)
        registry.set_stage("m", 1, Stage.PRODUCTION)
        assert registry.get_version("m").version == 1  # production wins over latest
        registry.set_stage("m", 2, Stage.PRODUCTION)
        assert registry.get_version("m", 1).stage == Stage.ARCHIVED
        assert registry.get_version("m", "@production").version == 2
        assert registry.get_version("m", "latest").version == 3
        registry.set_stage("m", 3, Stage.PRODUCTION, archive_existing=False)
        assert registry.get_version("m", 2).stage == Stage.PRODUCTION
        with pytest.raises(BadRequest, match="unknown stage"):
            registry.get_version("m", "@prod")

    def test_aliases(self, registry: Registry, tmp_path: Path) -> None:
        for c in "ab":
            registry.register_version("m", artifact(tmp_path, c), flavor="onnx", signature=SIG)
        registry.set_alias("m", "champion", 1)
        assert registry.get_version("m", "champion").version == 1
        registry.set_alias("m", "champion", 2)
        info = registry.get_version("m", "champion")
        assert (info.version, info.aliases) == (2, ["champion"])
        registry.delete_alias("m", "champion")
        with pytest.raises(VersionNotFound, match="versions: 1, 2"):
            registry.get_version("m", "champion")
        with pytest.raises(BadRequest, match="reserved"):
            registry.set_alias("m", "latest", 1)

    def test_unknown_names_say_what_exists(self, registry: Registry, tmp_path: Path) -> None:
        registry.register_version("fraud", artifact(tmp_path, "a"), flavor="onnx", signature=SIG)
        with pytest.raises(ModelNotFound, match="models: fraud"):
            registry.get_version("frauds")
        with pytest.raises(VersionNotFound, match="no version 7"):
            registry.get_version("fraud", 7)
        with pytest.raises(BadRequest, match="not valid"):
            registry.register_version(
                "Bad Name", artifact(tmp_path, "b"), flavor="onnx", signature=SIG
            )

    def test_endpoints_round_trip_and_check_their_versions(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        registry.register_version("fraud", artifact(tmp_path, "a"), flavor="onnx", signature=SIG)
        spec = EndpointSpec(
            name="fraud", variants=[VariantSpec(name="v1", model="fraud", version=1)]
        )
        registry.put_endpoint(spec)
        assert registry.get_endpoint("fraud") == spec
        assert [e.name for e in registry.list_endpoints()] == ["fraud"]
        bad = EndpointSpec(name="x", variants=[VariantSpec(name="v9", model="fraud", version=9)])
        with pytest.raises(VersionNotFound):
            registry.put_endpoint(bad)
        registry.delete_endpoint("fraud")
        with pytest.raises(EndpointNotFound, match="none yet"):
            registry.get_endpoint("fraud")

    def test_state_survives_reopening(self, registry: Registry, tmp_path: Path) -> None:
        registry.register_version("fraud", artifact(tmp_path, "a"), flavor="onnx", signature=SIG)
        again = Registry.open(
            str(registry.engine.url.render_as_string(hide_password=False)), registry.store.base_url
        )
        assert again.get_version("fraud", 1).flavor == "onnx"
        again.engine.dispose()
