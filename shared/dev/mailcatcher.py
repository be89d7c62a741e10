"""The SMTP catcher of the local stack: every message becomes an `.eml` file (with its envelope)
in the stack's mail directory. Run as `python -m shared.dev.mailcatcher --port P --dir D`."""
from __future__ import annotations

import argparse
import signal
import sys
import time
import uuid
from pathlib import Path


def run_mailcatcher(host: str, port: int, directory: Path) -> None:
    """Serve SMTP until SIGTERM/SIGINT; every message becomes `<time>-<id>.eml` in `directory`."""
    import threading

    from aiosmtpd.controller import Controller

    directory.mkdir(parents=True, exist_ok=True)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
            tmp = directory / (name + ".tmp")
            data = envelope.original_content or envelope.content
            if isinstance(data, str):
                data = data.encode("utf-8")
            # record the envelope too: Bcc recipients are only there
            header = (f"X-Envelope-From: {envelope.mail_from}\r\n"
                      f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode("utf-8")
            tmp.write_bytes(header + data)
            tmp.replace(directory / name)
            print(f"stored {name} for {len(envelope.rcpt_tos)} recipient(s)", flush=True)
            return "250 Message accepted for delivery"

    controller = Controller(Handler(), hostname=host, port=port, enable_SMTPUTF8=True)
    controller.start()
    print(f"mailcatcher listening on {host}:{port}, writing to {directory}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.dev.mailcatcher",
                                     description="SMTP server storing each message as an .eml file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    run_mailcatcher(args.host, args.port, args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
