"""Every bundle's configs/metadata.json is valid against the MONAI model zoo's metadata schema."""

from __future__ import annotations

import json

import jsonschema
import pytest

from conftest import ROOT

SCHEMA = ROOT.parent / "shared" / "model-zoo" / "meta_schema_20240725.json"
METADATA = sorted((ROOT / "bundles").glob("*/configs/metadata.json"))


def test_there_are_bundles_to_check():
    assert METADATA, "no bundles/*/configs/metadata.json found"


@pytest.mark.parametrize("path", METADATA, ids=lambda p: p.parts[-3])
def test_metadata_is_valid_against_the_model_zoo_schema(path):
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA}: the model zoo schema is not beside this checkout")
    metadata = json.loads(path.read_text())
    jsonschema.validate(metadata, json.loads(SCHEMA.read_text()))
    assert metadata["version"] in metadata["changelog"], "the current version needs a changelog entry"
