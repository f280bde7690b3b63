"""Joining a running two-node Ray cluster (both nodes on this machine) by its address."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from conftest import env_with_tests_path, noise_image
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items
from xmodal.indexer.errors import ClusterError, InvalidInputError


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


def test_a_worker_node_lost_midway_costs_nothing_but_time(tmp_path, monkeypatch):
    """Two worker nodes (the head runs no work); the node holding the encoding actor is taken down once its
    first batch is journaled. Ray restarts the actor on the other node and retries what was lost: the index
    holds every photo once, under the row ids and with the vectors a local run gives."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))  # the nodes' workers import fakes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    folder, noted = tmp_path / "photos", tmp_path / "nodes"
    folder.mkdir()
    noted.mkdir()
    for i in range(40):
        noise_image(i, size=(300, 200)).save(folder / f"p{i:02d}.jpg", quality=90)
    config = dict(images=[folder], model="python:fakes:make_node_noting_encoder", pretrained=str(noted),
                  batch_size=4)
    lost, finished = [], threading.Event()

    def take_down_the_actors_node():
        while not finished.is_set() and not lost:
            held = [n for n in nodes if (noted / n.node_id).exists()]
            if held and list((tmp_path / "cluster" / ".journal").glob("chunk-*.parquet")):
                cluster.remove_node(held[0])
                lost.append(held[0].node_id)
            time.sleep(0.05)

    killer = threading.Thread(target=take_down_the_actors_node)
    killer.start()
    try:
        report = build_index(tmp_path / "cluster", IndexConfig(**config, engine="ray", ray_address=cluster.address,
                                                               ray_actors=1))
    finally:
        finished.set()
        killer.join()
        cluster.shutdown()
    assert lost and len(list(noted.iterdir())) == 2  # the actor started again, on the other node
    build_index(tmp_path / "local", IndexConfig(**config, workers=0))
    assert report.counts["image"] == 40
    by_path = {r.path: (r.row_id, r.content_hash) for r in list_items(tmp_path / "local")}
    assert {r.path: (r.row_id, r.content_hash) for r in list_items(tmp_path / "cluster")} == by_path


def test_nodes_that_lack_the_model_are_one_line_naming_the_cause(two_nodes, tmp_path):
    """The cluster's nodes cannot import the fake model (tests/ is on this process's path only): the run stops
    in one line that says why, and leaves no index behind."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        noise_image(i, size=(120, 90)).save(folder / f"p{i}.jpg")
    with pytest.raises(ClusterError) as raised:
        build_index(tmp_path / "index", IndexConfig(images=[folder], model="python:fakes:make_encoder",
                                                    engine="ray", ray_address=two_nodes.address))
    message = str(raised.value)
    assert message.startswith("the encoding actors could not start on the Ray cluster: UnknownModelError: "
                              "'python:fakes:make_encoder': cannot import fakes.make_encoder (No module named 'fakes'); "
                              "every node needs xmodal, the model and its weights installed")
    assert "\n" not in message
    assert not ray.is_initialized() and not (tmp_path / "index").exists()


def test_joining_a_cluster_that_wants_a_token_says_how(tmp_path, tiny_spec):
    """`ray start --head` (Ray >= 2.59) turns on token authentication, which a process joining it by address
    must turn on too: the failure says so, in one line (after Ray's own 20 s of retrying)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    port = _free_port()
    ray_command = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))  # the venv's, activated or not
    head = subprocess.Popen([ray_command, "start", "--head", "--port", str(port), "--num-cpus", "1", "--block",
                             "--include-dashboard=false", "--disable-usage-stats"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert any("Ray runtime started" in line for line in head.stdout)
        folder = tmp_path / "photos"
        folder.mkdir()
        noise_image(1).save(folder / "a.png")
        # In a process of its own, as a user runs it: a Ray started in this one may have turned tokens on here.
        done = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", "index", str(folder), "--out",
                               str(tmp_path / "index"), "--model", tiny_spec, "--ray", f"127.0.0.1:{port}"],
                              env={k: v for k, v in env_with_tests_path().items() if k != "RAY_AUTH_MODE"},
                              capture_output=True,
                              text=True, timeout=300)
        error = done.stderr.splitlines()[-1]
        assert done.returncode == 2 and error.startswith(f"error: cannot join the Ray cluster at 127.0.0.1:{port}: ")
        assert error.endswith("; set RAY_AUTH_MODE=token here too if the cluster uses token authentication (ray "
                              "start's default since Ray 2.59), else check the address (ray start --head prints it)")
        assert "Traceback" not in done.stderr and not (tmp_path / "index").exists()
        # With that head running, a run on a local Ray of its own neither joins the head nor fails.
        report = build_index(tmp_path / "index", IndexConfig(images=[folder], model=tiny_spec, engine="ray"))
        assert report.counts["image"] == 1 and not ray.is_initialized()
    finally:
        os.killpg(head.pid, signal.SIGKILL)  # the head's processes share its session: none outlives it
        head.wait(60)
        # `ray start` left the address where a plain ray.init() looks for a running cluster: a later test's
        # ray.init(num_cpus=...) then tried to join the dead head and failed (ValueError)
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_run_with_nothing_to_encode_never_starts_ray(tmp_path, monkeypatch):
    """Photos removed, none added: the run commits the removal without starting (or joining) Ray."""
    from xmodal.indexer.build import ray_engine

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        noise_image(i, size=(120, 90)).save(folder / f"p{i}.jpg")
    build_index(tmp_path / "index", IndexConfig(images=[folder], model="python:fakes:make_encoder", workers=0))
    (folder / "p1.jpg").unlink()
    monkeypatch.setattr(ray_engine, "start", lambda settings: pytest.fail("Ray was started for nothing"))
    report = build_index(tmp_path / "index", IndexConfig(engine="ray"))
    assert report.stats.removed == 1 and report.counts["image"] == 2
