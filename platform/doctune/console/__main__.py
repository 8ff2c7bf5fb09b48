"""``python -m doctune.console``: serve the console on 127.0.0.1 (``doctune up`` runs this)."""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    from doctune.console.app import build_console, queued

    parser = argparse.ArgumentParser(prog="python -m doctune.console", description=__doc__)
    parser.add_argument("--api-url", required=True, help="The doctune API, e.g. http://127.0.0.1:28080")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    queued(build_console(args.api_url)).launch(
        server_name=args.host, server_port=args.port, show_error=False, quiet=True, prevent_thread_lock=False)


if __name__ == "__main__":
    main()
