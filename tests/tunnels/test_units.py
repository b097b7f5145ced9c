"""The pure parts of tunnels: back-off, known hosts, addresses, matching."""

from __future__ import annotations

import pytest

from tunnels.agent import backoff_delay
from tunnels.selectors import tunnel_match
from tunnels.services import TunnelError, address_join, address_split
from tunnels.ssh import KnownHostsError, known_hosts_name, parse_known_hosts

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.mark.parametrize(
    "failures, delay", [(0, 0), (1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)]
)
def test_backoff_doubles_up_to_its_cap(failures, delay):
    assert backoff_delay(failures, base=1, cap=60) == delay


def test_known_hosts_names_carry_a_port_other_than_22():
    assert known_hosts_name(host="jump", port=22) == "jump"
    assert known_hosts_name(host="jump", port=2222) == "[jump]:2222"


def test_known_hosts_parse_and_refuse_garbage():
    keys = parse_known_hosts(f"# comment\n\n[jump]:2222 ssh-ed25519 {KEY}\n")
    assert "[jump]:2222" in keys
    with pytest.raises(KnownHostsError, match="Line 1"):
        parse_known_hosts("jump ssh-ed25519 not-base64!")


@pytest.mark.parametrize(
    "address, split",
    [
        ("node1:8888", ("", "node1", 8888)),
        ("http://node1:8888/user/x/", ("http", "node1", 8888)),
        ("https://10.0.0.5:443", ("https", "10.0.0.5", 443)),
        ("[fd00::7]:8888", ("", "fd00::7", 8888)),
        ("http://[::1]:8888", ("http", "::1", 8888)),
    ],
)
def test_addresses_split_and_join(address, split):
    assert address_split(address) == split
    scheme, host, port = split
    assert address_split(address_join(scheme=scheme, host=host, port=port)) == split


@pytest.mark.parametrize("address", ["node1", "node1:port", "http://node1/", ""])
def test_an_address_without_host_and_port_is_refused(address):
    with pytest.raises(TunnelError):
        address_split(address)


def test_matching_names_a_node_or_a_jump_host_never_both_nor_neither():
    assert "remote_host__iexact" in str(tunnel_match(node="node1"))
    assert "jump_host__iexact" in str(tunnel_match(jump_host="jump"))
    assert "outpost_id" in str(tunnel_match(node="node1", outpost_id=3))
    with pytest.raises(ValueError):
        tunnel_match(node="node1", jump_host="jump")
    with pytest.raises(ValueError):
        tunnel_match()
