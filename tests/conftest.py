"""What the tests that start a real connector process share."""
import time
from contextlib import contextmanager

import httpx
import pytest

from fc_chatglm.testing import start_connector


def wait_settled(base: str, timeout: float = 60) -> dict:
    "`/health` of the connector at `base` once loading has ended (ready or failed); fails after `timeout` seconds."
    deadline = time.time() + timeout
    while (h := httpx.get(base + '/health').json())['status'] == 'loading':
        assert time.time() < deadline, h
        time.sleep(0.05)
    return h


@pytest.fixture
def settled():
    "`wait_settled`, for tests that start a connector."
    return wait_settled


@contextmanager
def ready_connector(*args: str, timeout: float = 120, **kw):
    "`start_connector(*args, **kw)`; yields its base URL once its model is ready, and kills it at the end."
    proc, url = start_connector(*args, **kw)
    try:
        deadline = time.time() + timeout
        while httpx.get(url + '/health').json()['status'] != 'ready':
            assert time.time() < deadline, 'the model did not load'
            time.sleep(0.1)
        yield url
    finally:
        proc.kill(); proc.wait()
