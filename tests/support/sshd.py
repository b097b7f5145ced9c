"""A real, key-only ``sshd`` on a free loopback port, for the tunnel tests (the jump host).

Started per test from a scratch folder with a generated host key and a generated client key
(test-environment.md, "SSH"); it never depends on a system-wide sshd. scripts/test-services
installs openssh-server. No Django here.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import alive, descendants, free_port, stop_group, wait_until

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    host: str
    port: int
    user: str
    #: The client's private key file (the agent's key).
    key_path: Path
    #: The host key as a known_hosts line for host:port.
    known_hosts_line: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def connections(self) -> set[int]:
        """The sshd children serving connections (one or two per client)."""
        return {pid for pid in descendants(self.proc.pid) if alive(pid)}

    def kill_connections(self) -> set[int]:
        """SIGKILL every connection's sshd: the clients' SSH transports die."""
        killed = self.connections()
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return killed

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tests", "-f", str(path)],
        check=True,
    )


def sshd_start(folder: Path) -> Sshd:
    """Start a key-only sshd on 127.0.0.1 with keys of its own in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    host_key, client_key = folder / "host_key", folder / "client_key"
    _keygen(host_key)
    _keygen(client_key)
    authorized = folder / "authorized_keys"
    authorized.write_text((folder / "client_key.pub").read_text())
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {folder / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "PermitTTY no",
                "X11Forwarding no",
                "ClientAliveInterval 5",
                "",
            ]
        )
    )
    # sshd wants its privilege-separation folder.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log_path = folder / "sshd.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    host_key_text = (folder / "host_key.pub").read_text().split()
    server = Sshd(
        host="127.0.0.1",
        port=port,
        user=getpass.getuser(),
        key_path=client_key,
        known_hosts_line=f"[127.0.0.1]:{port} {host_key_text[0]} {host_key_text[1]}",
        proc=proc,
        log_path=log_path,
    )
    wait_until(
        lambda: proc.poll() is not None or "Server listening" in server.log(),
        timeout=20,
        what="sshd to listen",
        details=server.log,
    )
    if proc.poll() is not None:
        pytest.fail(f"sshd exited with {proc.returncode}:\n{server.log()}")
    return server


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """A real sshd (the jump host) on a free loopback port, stopped at teardown."""
    if not Path(SSHD).exists():
        pytest.fail("sshd is missing: scripts/test-services installs openssh-server")
    server = sshd_start(tmp_path / "sshd")
    try:
        yield server
    finally:
        stop_group(server.proc, timeout=10)
        for pid in server.connections():
            os.kill(pid, signal.SIGKILL)
