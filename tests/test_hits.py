"""A hit as the CLI's --json and the service answer it: Hit.to_dict."""
from __future__ import annotations

import json

from xmodal.search.hits import Hit


def test_a_hits_dict_holds_every_field_and_its_reference_and_is_its_own():
    metadata = {"title": "Red car", "price": 18500, "tags": ["new", "red"]}
    hit = Hit(1, 0.5, 3, "product", "images/car.png", "A red car", metadata, {"image": 0.25, "text": 0.75},
              "SKU-1", "sku")
    shown = hit.to_dict()
    assert shown == {"rank": 1, "score": 0.5, "row_id": 3, "modality": "product", "path": "images/car.png",
                     "text": "A red car", "metadata": metadata, "scores": {"image": 0.25, "text": 0.75},
                     "key": "SKU-1", "key_column": "sku", "reference": "sku:SKU-1"}
    assert json.loads(json.dumps(shown)) == shown
    shown["metadata"]["price"], shown["scores"]["image"] = 1, 0.0  # a caller editing the answer
    assert hit.metadata["price"] == 18500 and hit.scores == {"image": 0.25, "text": 0.75}


def test_a_hit_without_scores_or_metadata_says_so():
    shown = Hit(2, 0.1, 7, "image", metadata=None).to_dict()
    assert shown["metadata"] is None and shown["scores"] is None and shown["reference"] == "7"
