"""`python -m bus.fakeserver --port N`: fakeredis's TCP server in Redis 7.0 flavour,
the embedded fallback when no `redis-server` binary is on PATH (see embedded.py)."""

from __future__ import annotations

import argparse


def serve(port: int) -> None:
    """Serve until the process is terminated (SIGTERM ends it; state is memory only)."""
    import fakeredis  # imported here: only the fallback server needs it

    server = fakeredis.TcpFakeServer(("127.0.0.1", port), server_version=(7, 0))
    server.daemon_threads = True  # client threads must not keep a terminated server alive
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bus.fakeserver")
    parser.add_argument("--port", type=int, required=True)
    serve(parser.parse_args(argv).port)


if __name__ == "__main__":
    main()
