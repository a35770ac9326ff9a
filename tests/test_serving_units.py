"""Serving config, repository, models.config, export layout and the batcher, without a server."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kerasops.errors import ConfigError
from kerasops.serving.batching import Batcher
from kerasops.serving.config import BatchingConfig, ServingConfig, VersionPolicyConfig
from kerasops.serving.errors import ServingError
from kerasops.serving.export import ExportError, export_saved_model
from kerasops.serving.repository import (
    PathMapping,
    check_model_name,
    entries_to_text,
    read_models_config,
    select_versions,
    update_models_config,
)
from tests.serving_helpers import digit_images, digits_cnn


def test_serving_config_is_strict() -> None:
    config = ServingConfig.from_dict({"rest_port": 9000, "batching": {"max_batch_size": 8}})
    assert config.batching.max_batch_size == 8
    with pytest.raises(ConfigError, match="batching.max_batchsize"):
        ServingConfig.from_dict({"batching": {"max_batchsize": 8}}, prefix="serving.")
    with pytest.raises(ConfigError, match="rest_port"):
        ServingConfig.from_dict({"rest_port": "eighty"})
    with pytest.raises(ConfigError, match="versions"):
        VersionPolicyConfig.from_dict({"policy": "specific"})


@pytest.mark.parametrize("name", ["../etc", "a/b", "", ".hidden", "a..b", "x" * 200])
def test_unsafe_model_names_are_rejected(name: str) -> None:
    with pytest.raises(ConfigError):
        check_model_name(name)


def test_version_policies() -> None:
    assert select_versions([1, 2, 3], VersionPolicyConfig()) == [3]
    assert select_versions([1, 2, 3], VersionPolicyConfig(num_versions=2)) == [2, 3]
    assert select_versions([1, 2, 3], VersionPolicyConfig(policy="all")) == [1, 2, 3]
    specific = VersionPolicyConfig(policy="specific", versions=(1, 3))
    assert select_versions([1, 2, 3], specific) == [1, 3]


def test_models_config_round_trip_and_update(tmp_path: Path) -> None:
    path = tmp_path / "models.config"
    mapping = PathMapping("/serving/models", tmp_path / "models")
    policy = VersionPolicyConfig(policy="specific", versions=(1, 2))
    update_models_config(path, "a", tmp_path / "models" / "a", policy, {"stable": 1}, mapping)
    update_models_config(path, "b", Path("/elsewhere/b"), VersionPolicyConfig(), None, mapping)
    update_models_config(path, "a", tmp_path / "models" / "a", policy, {"canary": 2}, mapping)
    text = path.read_text()
    assert 'base_path: "/serving/models/a"' in text and 'base_path: "/elsewhere/b"' in text
    entries = {e.name: e for e in read_models_config(path, mapping)}
    assert entries["a"].label_map() == {"canary": 2, "stable": 1}
    assert entries["a"].base_path == tmp_path / "models" / "a"
    assert entries["b"].base_path == Path("/elsewhere/b")
    assert entries["a"].policy == policy
    local = PathMapping("", tmp_path / "models")
    assert f'base_path: "{tmp_path / "models" / "a"}"' in entries_to_text([entries["a"]], local)


def test_export_layout_signatures_and_warmup(tmp_path: Path) -> None:
    import tensorflow as tf

    config = ServingConfig(
        model_repository=str(tmp_path / "models"), models_config=str(tmp_path / "models.config")
    )
    model = digits_cnn()
    result = export_saved_model(model, "digits", config=config, warmup_examples=digit_images(3))
    assert result.version == 1 and result.path == tmp_path / "models" / "digits" / "1"
    assert result.warmup_records == 3
    assert (result.path / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["1"]  # no staging left
    loaded = tf.saved_model.load(str(result.path))
    default = loaded.signatures["serving_default"]
    assert list(default.structured_input_signature[1]) == ["image"]
    assert sorted(default.structured_outputs) == ["classes", "probabilities"]
    assert set(loaded.signatures["classify"].structured_outputs) == {"classes", "scores"}
    second = export_saved_model(model, "digits", config=config)
    assert second.version == 2
    with pytest.raises(ExportError, match="already exists"):
        export_saved_model(model, "digits", config=config, version=2)


def _run_batched(batcher: Batcher, requests: list[np.ndarray]) -> list:
    async def main() -> list:
        futures = [batcher.submit({"x": r}, len(r)) for r in requests]
        return await asyncio.gather(*futures, return_exceptions=True)

    return asyncio.run(main())


def test_batcher_merges_concurrent_requests_into_one_call() -> None:
    calls: list[int] = []
    lock = threading.Lock()
    release = threading.Event()

    def run(inputs: dict) -> dict:
        with lock:
            calls.append(len(inputs["x"]))
        release.wait(5)  # the first call holds the worker while the others queue up
        return {"y": inputs["x"] * 2}

    config = BatchingConfig(max_batch_size=8, batch_timeout_micros=50_000)
    batcher = Batcher(run, config)

    async def main() -> list:
        first = batcher.submit({"x": np.full((1, 2), -1, "float32")}, 1)
        await asyncio.sleep(0.05)
        futures = [batcher.submit({"x": np.full((1, 2), i, "float32")}, 1) for i in range(8)]
        release.set()
        return await asyncio.gather(first, *futures)

    results = asyncio.run(main())[1:]
    batcher.close()
    assert calls == [1, 8]  # the lone first request ran at once, the queued eight together
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 2), 2 * i))


def test_batcher_runs_a_lone_request_at_once() -> None:
    config = BatchingConfig(max_batch_size=64, batch_timeout_micros=500_000)
    batcher = Batcher(lambda inputs: {"y": inputs["x"]}, config)
    started = time.monotonic()
    for _ in range(3):  # one client, one request at a time: never waits for the timeout
        _run_batched(batcher, [np.ones((1, 2), "float32")])
    batcher.close()
    assert time.monotonic() - started < 0.3


def test_batcher_isolates_a_failing_request() -> None:
    def run(inputs: dict) -> dict:
        if (inputs["x"] < 0).any():
            raise ServingError("INVALID_ARGUMENT", "negative")
        return {"y": inputs["x"]}

    batcher = Batcher(run, BatchingConfig(max_batch_size=4, batch_timeout_micros=50_000))
    results = _run_batched(batcher, [np.ones((1, 1)), -np.ones((1, 1)), np.ones((1, 1))])
    batcher.close()
    assert isinstance(results[1], ServingError)
    assert results[0]["y"].shape == (1, 1) and results[2]["y"].shape == (1, 1)


def test_batcher_rejects_when_the_queue_is_full_and_drains_on_close() -> None:
    release = threading.Event()

    def run(inputs: dict) -> dict:
        release.wait(5)
        return {"y": inputs["x"]}

    config = BatchingConfig(max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1)
    batcher = Batcher(run, config)

    async def main() -> tuple:
        first = batcher.submit({"x": np.ones((1, 1))}, 1)
        await asyncio.sleep(0.05)  # the worker holds the first; one more fits in the queue
        second = batcher.submit({"x": np.ones((1, 1))}, 1)
        with pytest.raises(ServingError, match="full"):
            batcher.submit({"x": np.ones((1, 1))}, 1)
        batcher.close()
        release.set()
        return await asyncio.gather(first, second)

    done = asyncio.run(main())
    assert len(done) == 2


def test_serving_benchmark_writes_untracked_results_unless_asked(tmp_path: Path) -> None:
    import argparse
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "serving" / "run.py"
    spec = importlib.util.spec_from_file_location("serving_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    default = module.output_paths(argparse.Namespace(update_results=False, output=str(tmp_path)))
    assert default == (tmp_path / "results.json", tmp_path / "RESULTS.md")
    tracked = module.output_paths(argparse.Namespace(update_results=True, output=str(tmp_path)))
    assert tracked[1] == path.parents[1] / "RESULTS.md"


@pytest.mark.parametrize(
    "array",
    [
        np.array([[b"0", b"seven"], [b"", "\u00e9".encode()]], dtype=object),
        np.array(["no", "yes"], dtype=object),  # str elements, written as UTF-8
        np.arange(12, dtype="float32").reshape(3, 4),
        np.array([[1, 2]], dtype="int64"),
    ],
)
def test_grpc_tensors_are_built_without_make_tensor_proto(array: np.ndarray) -> None:
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    from kerasops.serving.grpc_service import fill_tensor_proto, from_tensor_proto

    proto = tensor_pb2.TensorProto()
    fill_tensor_proto(proto, array)
    if array.dtype == object:  # the very message make_tensor_proto writes
        assert proto.SerializeToString() == tf.make_tensor_proto(array).SerializeToString()
        np.testing.assert_array_equal(tf.make_ndarray(proto), array.astype(bytes))
    else:  # TF Serving's tensor_content, read back unchanged by TensorFlow and by the server
        assert proto.tensor_content and tf.make_ndarray(proto).dtype == array.dtype
        np.testing.assert_array_equal(tf.make_ndarray(proto), array)
        np.testing.assert_array_equal(from_tensor_proto(proto), array)


def test_a_signature_call_passes_its_inputs_in_the_graphs_own_order(tmp_path: Path) -> None:
    """The flat call feeds the graph function's placeholders in their order: a signature of
    two inputs declared out of name order gives what the structured call gives, and an input
    that does not match the signature takes the structured call and its error."""
    import tensorflow as tf

    from kerasops.serving.servable import Signature

    class Two(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.float32, name="zeta"),
                tf.TensorSpec([None, 3], tf.float32, name="alpha"),
            ]
        )
        def serve(self, zeta, alpha):
            return {"out": zeta[:, 0] * 10.0 + alpha[:, 0]}

    tf.saved_model.save(Two(), str(tmp_path / "two"), signatures={"serving_default": Two().serve})
    function = tf.saved_model.load(str(tmp_path / "two")).signatures["serving_default"]
    signature = Signature("serving_default", function, BatchingConfig(enabled=False), None)
    assert signature._flat_order is not None
    inputs = {
        "zeta": np.array([[1, 0, 0], [2, 0, 0]], "float32"),
        "alpha": np.array([[5, 0, 0], [7, 0, 0]], "float32"),
    }
    np.testing.assert_array_equal(signature.run(inputs)["out"], [15.0, 27.0])
    want = function(zeta=tf.constant(inputs["zeta"]), alpha=tf.constant(inputs["alpha"]))
    np.testing.assert_array_equal(signature.run(inputs)["out"], want["out"].numpy())
    with pytest.raises(ServingError):
        signature.run({"zeta": inputs["zeta"], "alpha": inputs["alpha"].astype("int64")})
    wider = {"zeta": np.ones((2, 4), "float32"), "alpha": inputs["alpha"]}  # not [None, 3]
    structured = function(zeta=tf.constant(wider["zeta"]), alpha=tf.constant(wider["alpha"]))
    np.testing.assert_array_equal(signature.run(wider)["out"], structured["out"].numpy())
