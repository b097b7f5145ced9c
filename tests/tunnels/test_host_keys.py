"""Host key checking against a real sshd: an unknown key is refused unless accept-new is on,
and a changed key is refused even then. In-process: forward_open as the agent calls it."""

from __future__ import annotations

import subprocess

import pytest

from tunnels.agent import ForwardSpec, forward_open
from tunnels.ssh import HostKeyUnknown

pytestmark = pytest.mark.e2e


def spec_for(sshd, *, known_hosts, accept_new=False, remote_port=1):
    return ForwardSpec(
        ssh_id=1,
        jump_host=sshd.host,
        jump_port=sshd.port,
        user=sshd.user,
        key_path=str(sshd.key_path),
        key_text="",
        known_hosts=known_hosts,
        accept_new_host_keys=accept_new,
        remote_host="127.0.0.1",
        remote_port=remote_port,
        bind_host="127.0.0.1",
        bind_port=0,
    )


def test_an_unknown_host_key_is_refused_without_connecting(sshd):
    accepted = []
    with pytest.raises(HostKeyUnknown, match="not among the Outpost's known hosts"):
        forward_open(
            spec_for(sshd, known_hosts=""), host_key_accepted=lambda *a: accepted.append(a)
        )
    assert accepted == []
    assert "Accepted publickey" not in sshd.log()


def test_an_unknown_host_key_is_accepted_and_recorded_when_enabled(sshd):
    accepted = []
    forwarder = forward_open(
        spec_for(sshd, known_hosts="", accept_new=True),
        host_key_accepted=lambda ssh_id, line: accepted.append((ssh_id, line)),
    )
    try:
        assert forwarder.is_active
    finally:
        forwarder.stop(force=True)
    assert accepted == [(1, sshd.known_hosts_line)]


def test_a_known_host_key_connects(sshd):
    forwarder = forward_open(
        spec_for(sshd, known_hosts=sshd.known_hosts_line), host_key_accepted=None
    )
    try:
        assert forwarder.is_active
    finally:
        forwarder.stop(force=True)


def test_a_changed_host_key_is_refused_even_with_accept_new(sshd, tmp_path):
    # given known hosts naming another key for the jump host
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True
    )
    kind, key = (tmp_path / "other.pub").read_text().split()[:2]
    wrong = f"[{sshd.host}]:{sshd.port} {kind} {key}"
    # then the agent does not log in
    with pytest.raises(Exception, match="(?i)host key|gateway"):
        forward_open(spec_for(sshd, known_hosts=wrong, accept_new=True), host_key_accepted=None)
    assert "Accepted publickey" not in sshd.log()
