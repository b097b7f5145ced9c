"""The tunnel agent in a thread of the worker (tunnels/agent_thread.py): it runs until the
worker stops it, and a failure it does not handle itself starts it again after a back-off.
The end-to-end case (a real worker holding a real tunnel through sshd) is in
test_e2e_agent.py."""

import logging

import pytest

from tests.support.processes import wait_until
from tunnels.agent import TunnelAgent
from tunnels.agent_thread import AgentThread

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_failed_agent_is_started_again_and_stops_with_the_worker(monkeypatch, settings, caplog):
    # given an agent whose first two rounds fail with an error it does not handle
    settings.TUNNEL_CHECK_INTERVAL = 0.05
    settings.TUNNEL_BACKOFF_MAX = 1.5
    rounds = []
    real_round = TunnelAgent.round

    def round_(agent):
        rounds.append(agent)
        if len(rounds) <= 2:
            raise RuntimeError("a bug")
        real_round(agent)

    monkeypatch.setattr(TunnelAgent, "round", round_)
    caplog.set_level(logging.INFO)
    thread = AgentThread("agent-t")
    # when it runs in its thread
    thread.start()
    # then each failure is logged, and a new agent goes on with its rounds after a back-off
    # that grows up to TUNNEL_BACKOFF_MAX
    wait_until(lambda: len({id(agent) for agent in rounds}) == 3 and len(rounds) > 4,
               timeout=30, what="a third agent's rounds")  # fmt: skip
    assert "Tunnel agent agent-t failed; starting it again in 1 s" in caplog.text
    assert "Tunnel agent agent-t failed; starting it again in 1.5 s" in caplog.text
    # and when the worker stops it, the thread ends
    thread.stop(timeout=30)
    assert not thread.thread.is_alive()
    assert "Tunnel agent agent-t stopped" in caplog.text
