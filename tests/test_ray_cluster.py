"""Joining a running two-node Ray cluster (both nodes on this machine) by its address."""
from __future__ import annotations

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import noise_image
from indexer import IndexConfig, build_index
from indexer.edit import list_items
from indexer.errors import InvalidInputError


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node of one CPU each: two encoding actors must land on different nodes."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def test_an_index_built_on_two_nodes_is_the_local_one(two_nodes, tmp_path, tiny_spec):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(24):
        noise_image(i, size=(300, 200)).save(folder / f"p{i:02d}.jpg", quality=90)
    on_cluster = build_index(tmp_path / "cluster", IndexConfig(images=[folder], model=tiny_spec, engine="ray",
                                                               ray_address=two_nodes.address, ray_actors=2))
    assert not ray.is_initialized()  # joined for the run, then left; the cluster itself keeps running
    assert len([n for n in two_nodes.list_all_nodes()]) == 2
    build_index(tmp_path / "local", IndexConfig(images=[folder], model=tiny_spec, workers=0))
    by_path = {r.path: (r.row_id, r.content_hash) for r in list_items(tmp_path / "local")}
    assert {r.path: (r.row_id, r.content_hash) for r in list_items(tmp_path / "cluster")} == by_path
    assert on_cluster.counts["image"] == 24


def test_an_address_with_no_cluster_is_one_line(tmp_path, tiny_spec):
    folder = tmp_path / "photos"
    folder.mkdir()
    noise_image(1).save(folder / "a.png")
    with pytest.raises(InvalidInputError, match="cannot join the Ray cluster at 127.0.0.1:1: nothing answers"):
        build_index(tmp_path / "index", IndexConfig(images=[folder], model=tiny_spec, engine="ray",
                                                    ray_address="127.0.0.1:1"))
    assert not (tmp_path / "index").exists()
