"""A real OpenSSH server on a loopback port, with throwaway keys, for tests and benchmarks.

Each :class:`SshServer` is one ``sshd -D`` with its own host key, authorized key, pid file
and log; :class:`SshWorld` holds the client side (one ssh_config with a ``Host`` alias per
server, one client key, a private known_hosts) and the remote side's cbos environment: its
own tmux socket, HOME and state dirs, reached through the host's ``command``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SshServer:
    """One sshd on 127.0.0.1:port; :meth:`kill` drops it and every connection it serves."""

    def __init__(self, root: Path, name: str, client_pub: Path) -> None:
        self.root = root / f"sshd-{name}"
        self.root.mkdir(parents=True)
        self.name = name
        self.port = free_port()
        self.host_key = self.root / "host_ed25519"
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f",
                        str(self.host_key)], check=True)
        shutil.copy(client_pub, self.root / "authorized_keys")
        self.config = self.root / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"PidFile {self.root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.root / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPrintMotd no\nLogLevel VERBOSE\n"
            "MaxSessions 100\nMaxStartups 100:30:200\n")
        self.log = self.root / "sshd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_port(self.port)

    def kill(self) -> None:
        """The server and its connections' processes gone, as when a machine drops off."""
        if self.proc is None:
            return
        import psutil

        with contextlib.suppress(psutil.Error):
            family = psutil.Process(self.proc.pid).children(recursive=True)
            for proc in family:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


class SshWorld:
    """The client side and the remote sides of some sshd servers on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.key = root / "client_ed25519"
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)],
                       check=True)
        self.known_hosts = root / "known_hosts"
        self.ssh_config = root / "ssh_config"
        self.servers: dict[str, SshServer] = {}
        self.bin = Path(sys.executable).parent

    def add(self, name: str, start: bool = True) -> SshServer:
        server = SshServer(self.root, name, self.key.with_suffix(".pub"))
        self.servers[name] = server
        self._write_config()
        if start:
            server.start()
        return server

    def _write_config(self) -> None:
        blocks = []
        for name, server in self.servers.items():
            blocks.append(
                f"Host {name}\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n")
        blocks.append(
            f"Host *\n  BatchMode yes\n  IdentitiesOnly yes\n  IdentityFile {self.key}\n"
            f"  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {self.known_hosts}\n"
            "  LogLevel ERROR\n")
        self.ssh_config.write_text("\n".join(blocks))

    @property
    def ssh_command(self) -> str:
        return f"ssh -F {shlex.quote(str(self.ssh_config))}"

    def remote_home(self, name: str) -> Path:
        home = self.root / f"remote-{name}"
        home.mkdir(exist_ok=True)
        return home

    def remote_env(self, name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment the remote cbos runs with (its own tmux socket and state)."""
        home = self.remote_home(name)
        env = {"HOME": str(home), "XDG_STATE_HOME": str(home / "state"),
               "XDG_CONFIG_HOME": str(home / "config"),
               "CBOS_TMUX_SOCKET": f"cbos-remote-{os.getpid()}-{name}",
               "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
               "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}
        for key in ("CBOS_CLAUDE_COMMAND", "CBOS_CLAUDE_ENV_VARS", "LANG", "LC_ALL"):
            if key in os.environ:
                env[key] = os.environ[key]
        env.update(extra or {})
        return {k: v for k, v in env.items() if v}

    def command(self, name: str, extra: dict[str, str] | None = None) -> str:
        """The host's ``command``: the remote cbos with its environment."""
        env = self.remote_env(name, extra)
        words = ["env", *(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())),
                 shlex.quote(str(self.bin / "cbos"))]
        return " ".join(words)

    def toml(self, names: list[str] | None = None) -> str:
        out = []
        for name in names or list(self.servers):
            command = self.command(name).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'[[hosts]]\nname = "{name}"\nssh = "{name}"\ncommand = "{command}"\n')
        return "\n".join(out)

    def configure(self, names: list[str], extra: str = "") -> None:
        """This machine's cbos config (under $HOME) with these hosts, after ``extra``."""
        directory = Path(os.environ["HOME"]) / ".config" / "cbos"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.toml").write_text(extra + self.toml(names))

    def new_session(self, name: str, slug: str) -> Path:
        """`cbos new` on host ``name`` in a fresh project dir there; its path."""
        project = self.remote_home(name) / slug.lower()
        project.mkdir(exist_ok=True)
        self.remote_cbos(name, "new", str(project), "--slug", slug)
        return project

    def remote_cbos(self, name: str, *args: str, check: bool = True,
                    timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run cbos as the remote side would (same machine, the remote's environment)."""
        env = {**os.environ, **self.remote_env(name)}
        return subprocess.run([str(self.bin / "cbos"), *args], env=env, capture_output=True,
                              text=True, timeout=timeout, check=check,
                              cwd=self.remote_home(name))

    def close(self) -> None:
        for name, server in self.servers.items():
            server.kill()
            env = self.remote_env(name)
            subprocess.run(["tmux", "-L", env["CBOS_TMUX_SOCKET"], "kill-server"],
                           capture_output=True, check=False)
