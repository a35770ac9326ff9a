"""Shadow calls rank below client requests: a request drawn for mirroring while the server is
answering another client request is skipped as `busy` (counted, nothing logged for it) and the
client still gets the primary's answer; an idle server mirrors as before."""

from __future__ import annotations

import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest

from kerasops.errors import ConfigError
from kerasops.serving.config import ServingConfig
from kerasops.serving.export import export_saved_model
from kerasops.serving.server import EmbeddedServer, model_entries
from kerasops.serving.shadow import CLIENT_LOAD
from tests.serving_helpers import digit_images, digits_cnn, probabilities_of
from tests.test_shadow import (
    CHALLENGER_SEED,
    CHAMPION_SEED,
    MODELS,
    metric,
    outputs_of,
    pairs,
    serving_config,
)

pytestmark = pytest.mark.serial  # timed against other processes: run alone (Makefile)

tf = pytest.importorskip("tensorflow")

FULL = {"digits": {"label": "challenger", "fraction": 1.0}}


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("shadow-priority")
    config = serving_config(root)
    export_saved_model(digits_cnn(seed=CHALLENGER_SEED), "digits", config=config, version=1)
    export_saved_model(digits_cnn(seed=CHAMPION_SEED), "digits", config=config, version=2)
    (root / "models.config").write_text(MODELS.format(root=root))
    return root


def serve(root, shadow: dict) -> tuple[EmbeddedServer, httpx.Client]:
    shutil.rmtree(root / "logs", ignore_errors=True)
    config = serving_config(root, shadow)
    server = EmbeddedServer(config, *model_entries(config))
    server.start()
    return server, httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30)


def counts(http: httpx.Client) -> tuple[float, float]:
    """(shadow calls answered, requests skipped as busy)."""
    page = http.get("/monitoring/prometheus/metrics").text
    answered = metric(
        page, "kerasops_serving_shadow_requests_total", model="digits", outcome="answered"
    )
    busy = metric(page, "kerasops_serving_shadow_skipped_total", model="digits", reason="busy")
    return answered, busy


def settled(http: httpx.Client, total: int, timeout: float = 30.0) -> tuple[float, float]:
    """The counts once every drawn request is answered by the shadow or skipped."""
    deadline = time.monotonic() + timeout
    while True:
        answered, busy = counts(http)
        if answered + busy >= total or time.monotonic() > deadline:
            return answered, busy
        time.sleep(0.05)


def test_a_request_drawn_while_another_client_is_answered_is_skipped_as_busy(repository):
    images = digit_images(4, seed=8)
    champion = digits_cnn(seed=CHAMPION_SEED).predict(images, verbose=0)
    server, http = serve(repository, FULL)
    try:
        CLIENT_LOAD.enter()  # another client request in the server, as a signature counts it
        try:
            replies = [
                http.post(
                    "/v1/models/digits:predict", json={"instances": images[i : i + 1].tolist()}
                )
                for i in range(4)
            ]
        finally:
            CLIENT_LOAD.leave()
        busy_answers = counts(http)
        for i in range(4):  # the server idle again: every request mirrored
            reply = http.post(
                "/v1/models/digits:predict", json={"instances": images[i : i + 1].tolist()}
            )
            assert reply.status_code == 200
        answered, busy = settled(http, 8)
    finally:
        server.stop()
    assert all(r.status_code == 200 for r in replies)
    got = np.concatenate([probabilities_of(r.json()["predictions"]) for r in replies])
    np.testing.assert_allclose(got, champion, atol=1e-5)  # the client's answers unchanged
    assert busy_answers == (0, 4)
    assert (answered, busy) == (4, 4)
    logged = pairs(repository)  # only the mirrored requests logged, each as a whole pair
    assert len(logged) == 4 and all(set(p) == {"primary", "shadow"} for p in logged.values())


def test_under_concurrent_load_busy_skips_and_mirrored_calls_add_up(repository):
    """8 clients x 25 requests at fraction 1.0: every request is mirrored or skipped as busy,
    some are skipped (clients overlap), and each mirrored one is logged as a pair."""
    images = digit_images(8, seed=9)
    champion = digits_cnn(seed=CHAMPION_SEED).predict(images, verbose=0)
    server, http = serve(repository, FULL)
    wrong: list[str] = []

    def client(i: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.rest_port}", timeout=30) as own:
            body = {"instances": images[i : i + 1].tolist()}
            for _ in range(25):
                reply = own.post("/v1/models/digits:predict", json=body)
                got = probabilities_of(reply.json()["predictions"]) if reply.is_success else None
                if got is None or not np.allclose(got[0], champion[i], atol=1e-5):
                    wrong.append(reply.text)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answered, busy = settled(http, 200)
    finally:
        server.stop()
    assert not wrong
    assert answered + busy == 200 and busy > 0
    logged = pairs(repository)
    assert len(logged) == answered
    assert all(set(p) == {"primary", "shadow"} for p in logged.values())


def test_max_pending_is_checked():
    config = ServingConfig.from_dict(
        {"shadow": {"digits": {"label": "c", "fraction": 0.5, "max_pending": 2}}}
    )
    assert config.shadow["digits"].max_pending == 2
    with pytest.raises(ConfigError, match="serving.shadow.digits.max_pending must be >= 1"):
        ServingConfig.from_dict(
            {"shadow": {"digits": {"label": "c", "max_pending": 0}}}, prefix="serving."
        )


@pytest.mark.slow
def test_a_shadow_in_its_own_process_answers_at_the_lowest_priority(repository):
    """`process: true`: the challenger answers mirrored calls in a worker process under
    SCHED_IDLE (the serving process answers them itself while the worker loads); the answers
    are the challenger's; a killed worker leaves the primary answering and the mirror working."""
    images = digit_images(8, seed=5)
    challenger = digits_cnn(seed=CHALLENGER_SEED).predict(images, verbose=0)
    shadow = {"digits": {"label": "challenger", "fraction": 1.0, "process": True}}
    server, http = serve(repository, shadow)
    try:

        def ask(i: int) -> None:
            body = {"instances": images[i : i + 1].tolist()}
            assert http.post("/v1/models/digits:predict", json=body).status_code == 200

        ask(0)  # starts the worker; answered in this process meanwhile
        worker = server.manager._mirror._workers["digits"]
        assert worker.ready.wait(180), "the shadow worker did not load the challenger"
        assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE
        for i in range(1, 5):
            ask(i)
            settled(http, i + 1)
        assert worker.answered == 4
        worker.close()  # gone: the mirror answers in this process again
        for i in range(5, 8):
            ask(i)
        answered, busy = settled(http, 8)
    finally:
        server.stop()
    assert (answered, busy) == (8, 0)
    logged = pairs(repository)
    shadows = {}
    for pair in logged.values():
        sent = tf.make_ndarray(pair["shadow"].predict_log.request.inputs["image"])
        index = int(np.argmin(np.abs(images - sent).reshape(len(images), -1).sum(axis=1)))
        shadows[index] = outputs_of(pair["shadow"])[0]
    assert sorted(shadows) == list(range(8))
    for i, answer in shadows.items():
        np.testing.assert_allclose(answer, challenger[i], atol=1e-5)
