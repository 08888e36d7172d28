"""`python -m bot.probe [--worker] [URL ...]`: ask /healthz and /readyz, exit 0 when every answer is 200, else 1 (with
what it said). Docker's healthcheck in `compose.yaml` runs it: the image has Python, not curl.

Without URLs it asks this host's own port from the settings (`.env` included): the bot's IMAGINE_HEALTH_PORT, or with
`--worker` a GPU worker's IMAGINE_WORKER_HEALTH_PORT; an address of 0.0.0.0 or :: is asked at the loopback address.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

TIMEOUT = 8.0  # seconds; compose's healthcheck gives 10


def urls_from_settings(worker: bool) -> list[str]:
    """The /healthz and /readyz of this host's bot (or worker), from the settings."""
    from bot.config import Settings

    settings = Settings.from_env()
    port = settings.worker_health_port if worker else settings.health_port
    host = settings.health_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return [f"http://{host}:{port}/healthz", f"http://{host}:{port}/readyz"]


def ask(url: str) -> tuple[bool, str]:
    """(whether `url` answered 200, what it said: its body, or why there was no answer)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - our own http:// port
            return response.status == 200, response.read(2000).decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return False, exc.read(2000).decode(errors="replace")
    except (OSError, ValueError) as exc:  # refused, timed out, not a URL
        return False, f"no answer ({exc})"


def main(argv: list[str] | None = None) -> int:
    """Ask each URL; 0 when all answered 200, 1 otherwise (2 for settings that cannot be read)."""
    parser = argparse.ArgumentParser(prog="python -m bot.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="*", help="default: /healthz and /readyz of this host's port")
    parser.add_argument("--worker", action="store_true", help="a GPU worker's port (IMAGINE_WORKER_HEALTH_PORT)")
    args = parser.parse_args(argv)
    if args.urls:
        urls = args.urls
    else:
        from bot.config import ConfigError

        try:
            urls = urls_from_settings(args.worker)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    healthy = True
    for url in urls:
        ok, said = ask(url)
        healthy = healthy and ok
        print(f"{'ok' if ok else 'FAIL'} {url} {said}", file=sys.stdout if ok else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
