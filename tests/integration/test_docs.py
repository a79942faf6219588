"""/api/docs works without internet, and the OpenAPI document describes the inference routes."""

from __future__ import annotations

import re

from tests.integration.conftest import Api


def test_docs_page_loads_only_local_assets(api: Api) -> None:
    page = api.http.get("/api/docs")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text
    assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == []  # no CDN, no validator
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {a.rsplit("/", 1)[-1] for a in assets} == {
        "favicon.png",
        "swagger-ui.css",
        "swagger-ui-bundle.js",
    }
    for asset in assets:
        response = api.http.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    assert "validatorUrl: null" in page.text


def test_openapi_describes_the_inference_routes(api: Api) -> None:
    doc = api.http.get("/api/openapi.json").json()
    paths = doc["paths"]
    for path in (
        "/v1/endpoints/{name}/invocations",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/v1/endpoints/{name}/async",
    ):
        assert "post" in paths[path], path
    invoke = paths["/v1/endpoints/{name}/invocations"]["post"]
    body = invoke["requestBody"]["content"]["application/json"]["schema"]
    refs = {s["$ref"].rsplit("/", 1)[-1] for s in body["anyOf"]}
    assert refs == {"InstancesRequest", "InputsRequest"}
    assert "422" in invoke["responses"]
    assert paths["/v1/endpoints/{name}/async"]["post"]["responses"]["202"]
