"""Who may talk to a bench server: loopback by default, CURVE keys for anything else.

Key directory layout (written by ``labctl keys generate DIR``)::

    DIR/server/server.key, server.key_secret     the server's pair (secret stays on the server)
    DIR/clients/<name>.key, <name>.key_secret    one pair per client machine
    DIR/authorized/<name>.key                    public keys the server accepts (the allow-list)

A client needs its own pair and ``server/server.key``; the server needs its pair and
``authorized/``. Removing a file from ``authorized/`` revokes that client at the next
server start.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from labctl.errors import ConfigError, UsageError

SERVER_NAME = "server"
DEFAULT_CLIENT = "client"


@dataclass(frozen=True)
class ServerKeys:
    public: bytes
    secret: bytes
    allow_dir: Path


@dataclass(frozen=True)
class ClientKeys:
    public: bytes
    secret: bytes
    server_public: bytes


def bind_host(addr: str) -> str | None:
    """The host part of a tcp:// address, or None for transports that never leave the machine (ipc, inproc)."""
    if addr.startswith(("ipc://", "inproc://")):
        return None
    if not addr.startswith("tcp://"):
        raise UsageError(f"bind address {addr!r}: expected tcp://HOST:PORT (or ipc://PATH)")
    rest = addr[len("tcp://"):]
    if rest.startswith("["):  # [::1]:5555
        host = rest[1: rest.find("]")] if "]" in rest else ""
    else:
        host = rest.rsplit(":", 1)[0] if ":" in rest else ""
    if not host:
        raise UsageError(f"bind address {addr!r}: expected tcp://HOST:PORT")
    return host


def is_loopback(addr: str) -> bool:
    """True if binding ``addr`` accepts connections from this machine only. Unknown names count as not loopback."""
    host = bind_host(addr)
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: may face the network


def check_bind(addr: str, keys: ServerKeys | None, insecure: bool) -> str | None:
    """Refuse a network-facing bind without keys (before anything is bound). Returns a warning to print, if any."""
    if is_loopback(addr):
        return None
    if keys is not None:
        return None
    if insecure:
        return (f"WARNING: serving {addr} WITHOUT encryption or authentication (--insecure): anyone who can reach "
                "this port can drive the lasers and SLMs. Use --keys DIR (labctl keys generate) instead.")
    raise UsageError(
        f"refusing to bind {addr}: it is not a loopback address, so it needs CURVE keys "
        "(--keys DIR, made by `labctl keys generate DIR`) or an explicit --insecure"
    )


def _load(path: Path, want_secret: bool) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise ConfigError(f"{path}: key file not found (create keys with `labctl keys generate DIR`)")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path}: not a CURVE certificate ({e})") from None
    if want_secret and not secret:
        raise ConfigError(f"{path}: holds no secret key (expected the .key_secret file)")
    return public, secret


def load_server_keys(directory: str | Path) -> ServerKeys:
    d = Path(directory)
    public, secret = _load(d / SERVER_NAME / f"{SERVER_NAME}.key_secret", True)
    allow = d / "authorized"
    if not allow.is_dir() or not any(allow.glob("*.key")):
        raise ConfigError(f"{allow}: no authorized client keys (expected <name>.key files; `labctl keys generate`)")
    return ServerKeys(public, secret, allow)  # type: ignore[arg-type]


def load_client_keys(directory: str | Path, name: str = DEFAULT_CLIENT) -> ClientKeys:
    d = Path(directory)
    public, secret = _load(d / "clients" / f"{name}.key_secret", True)
    server_public, _ = _load(d / SERVER_NAME / f"{SERVER_NAME}.key", False)
    return ClientKeys(public, secret, server_public)  # type: ignore[arg-type]


def _restrict(path: Path) -> None:
    os.chmod(path, 0o600)


def generate_keys(directory: str | Path, clients: tuple[str, ...] = (DEFAULT_CLIENT,)) -> list[Path]:
    """Create the server pair (if missing) and one pair per named client (refusing to overwrite). Returns new files."""
    d = Path(directory)
    for name in clients:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise UsageError(f"client name {name!r}: use letters, digits, - and _ only")
    existing = [d / "clients" / f"{n}.key_secret" for n in clients if (d / "clients" / f"{n}.key_secret").exists()]
    if existing:
        raise UsageError(f"{existing[0]} already exists; keys are never overwritten (remove it first)")
    created: list[Path] = []
    server_dir, clients_dir, allow_dir = d / SERVER_NAME, d / "clients", d / "authorized"
    for sub in (server_dir, clients_dir, allow_dir):
        sub.mkdir(parents=True, exist_ok=True)
    if not (server_dir / f"{SERVER_NAME}.key_secret").exists():
        pub, sec = zmq.auth.create_certificates(str(server_dir), SERVER_NAME)
        _restrict(Path(sec))
        created += [Path(pub), Path(sec)]
    for name in clients:
        pub, sec = zmq.auth.create_certificates(str(clients_dir), name)
        _restrict(Path(sec))
        allowed = allow_dir / f"{name}.key"
        shutil.copyfile(pub, allowed)
        created += [Path(pub), Path(sec), allowed]
    return created


def list_keys(directory: str | Path) -> dict[str, object]:
    """Public keys found in a key directory (never the secrets)."""
    d = Path(directory)
    out: dict[str, object] = {"server": None, "clients": [], "authorized": []}
    server_key = d / SERVER_NAME / f"{SERVER_NAME}.key"
    if server_key.exists():
        out["server"] = _load(server_key, False)[0].decode()
    for kind in ("clients", "authorized"):
        for p in sorted((d / kind).glob("*.key")):
            out[kind].append({"name": p.stem, "public": _load(p, False)[0].decode()})  # type: ignore[union-attr]
    return out


def apply_server_keys(socket: zmq.Socket, keys: ServerKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_server = True


def apply_client_keys(socket: zmq.Socket, keys: ClientKeys) -> None:
    socket.curve_secretkey = keys.secret
    socket.curve_publickey = keys.public
    socket.curve_serverkey = keys.server_public


def start_authenticator(context: zmq.Context, keys: ServerKeys):
    """A ThreadAuthenticator that accepts only the public keys in the allow-list directory."""
    from zmq.auth.thread import ThreadAuthenticator

    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.allow_dir))
    return auth


