"""Network guard for tests (loaded by every Python process through PYTHONPATH).

Refuses and records any connection or name lookup that leaves the machine, so a test can prove the
pipeline made none. Loopback stays allowed (torch/accelerate may talk to themselves on 127.0.0.1).
The log path comes from $VOICETUNE_NETGUARD_LOG; without it this module does nothing.
"""

from __future__ import annotations

import os
import socket

_LOG = os.environ.get("VOICETUNE_NETGUARD_LOG")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "", None}


def _record(kind: str, target: object) -> None:
    with open(_LOG or os.devnull, "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()} {kind} {target!r}\n")


def _is_local(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        return host in _LOCAL_HOSTS or str(host).startswith("127.")
    return True  # AF_UNIX paths and the like never leave the machine


if _LOG:
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo

    def _guarded_connect(self: socket.socket, address: object) -> None:
        if not _is_local(address):
            _record("connect", address)
            raise OSError(101, f"network guard: connection to {address!r} refused in tests")
        _connect(self, address)

    def _guarded_connect_ex(self: socket.socket, address: object) -> int:
        if not _is_local(address):
            _record("connect", address)
            return 101
        return _connect_ex(self, address)

    def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in _LOCAL_HOSTS and not str(host).startswith("127."):
            _record("resolve", host)
            raise socket.gaierror(-2, f"network guard: lookup of {host!r} refused in tests")
        return _getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
