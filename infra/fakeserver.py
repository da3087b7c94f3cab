"""`python -m infra.fakeserver --port N [--user U --auth-file F]`: fakeredis's TCP server
in Redis 7.0 flavour, the embedded fallback when no `redis-server` binary is on PATH
(see embedded.py).

With `--auth-file`, only the ACL user `--user` with the password in that file may do
anything: the `default` user is turned off, as the embedded `redis-server` is
configured. fakeredis applies ACLs to TCP clients (2.41 does; its `requirepass` alone
is not enforced), and the server checks that an anonymous client really is refused
before it says it is ready: with a fakeredis that would let one in, it exits (2)
rather than run open."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import redis


def _lock_down(fake_server: Any, user: str, password: str) -> str | None:
    """Turn on `user` with `password`, turn `default` off, before any client can
    connect; None when an anonymous client is then refused, else what went wrong."""
    import fakeredis

    admin: Any = fakeredis.FakeRedis(server=fake_server, protocol=2)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")
    anonymous = fakeredis.FakeRedis(server=fake_server, protocol=2)
    try:
        anonymous.set("loops:fakeserver:probe", "1")
    except redis.ResponseError:
        return None
    return "fakeredis accepted a client that did not log in (its ACL support is missing)"


def serve(port: int, user: str | None = None, auth_file: Path | None = None) -> None:
    """Serve until the process is terminated (SIGTERM ends it; state is memory only)."""
    import fakeredis  # imported here: only the fallback server needs it

    server: Any = fakeredis.TcpFakeServer(("127.0.0.1", port), server_version=(7, 0))
    server.daemon_threads = True  # client threads must not keep a terminated server alive
    if auth_file is not None:
        problem = _lock_down(server.fake_server, user or "loops", auth_file.read_text().strip())
        if problem is not None:
            print(f"infra.fakeserver: {problem}; refusing to serve", file=sys.stderr, flush=True)
            sys.exit(2)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.fakeserver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default=None, help="the only ACL user allowed in")
    parser.add_argument("--auth-file", type=Path, default=None, help="holds its password")
    args = parser.parse_args(argv)
    serve(args.port, args.user, args.auth_file)


if __name__ == "__main__":
    main()
