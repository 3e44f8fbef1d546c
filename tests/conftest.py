"""What the tests that start a real connector process share."""
import time

import httpx
import pytest


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
