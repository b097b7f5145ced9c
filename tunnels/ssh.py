"""SSH material through paramiko: known host keys, private keys, a jump host's key.

No Django here: the agent and the models' checks both use it.
"""

from __future__ import annotations

import io
import socket

import paramiko


class KnownHostsError(ValueError):
    """A known_hosts text that does not parse."""


class HostKeyUnknown(Exception):
    """The jump host's key is not among the Outpost's known hosts (and accept-new is off)."""


def known_hosts_name(*, host: str, port: int) -> str:
    """The host's name in known_hosts lines, as OpenSSH writes it."""
    return host if port == 22 else f"[{host}]:{port}"


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """The keys of an OpenSSH known_hosts text; raises KnownHostsError on a line that is not
    one (comments and empty lines are fine)."""
    keys = paramiko.HostKeys()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno=number)
        except (paramiko.SSHException, paramiko.hostkeys.InvalidHostKey, ValueError) as error:
            raise KnownHostsError(f"Line {number} is not a known_hosts line: {error}") from error
        if entry is None or entry.key is None:
            raise KnownHostsError(f"Line {number} is not a known_hosts line.")
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    return keys


def host_key_lookup(*, known_hosts: str, host: str, port: int) -> paramiko.PKey | None:
    """The known key of ``host:port``, or None. With several (key types), the first."""
    found = parse_known_hosts(known_hosts).lookup(known_hosts_name(host=host, port=port))
    if not found:
        return None
    return next(iter(found.values()))


def known_hosts_line(*, host: str, port: int, key: paramiko.PKey) -> str:
    return f"{known_hosts_name(host=host, port=port)} {key.get_name()} {key.get_base64()}"


def host_key_fetch(*, host: str, port: int, timeout: float = 10) -> paramiko.PKey:
    """The key ``host:port`` presents, read without authenticating (for accept-new)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def private_key_load(*, path: str = "", text: str = "") -> paramiko.PKey:
    """The private key in the file ``path``, or in ``text``; raises paramiko.SSHException or
    OSError when it cannot be read."""
    if path:
        return paramiko.PKey.from_path(path)
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise paramiko.SSHException("The key is not an Ed25519, ECDSA or RSA private key.")
