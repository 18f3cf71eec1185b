"""Commands of forwarding and the CCTV linkage: ``jikimi receiver`` and ``jikimi sim camera``.

    jikimi receiver --listen tcp://127.0.0.1:8480 [--db FILE] [--fail-first N] [--strict] [--ca-bundle FILE]
                    [--cert FILE --key FILE [--ca FILE [--crl FILE]]] [--schema XSD | --no-schema]
    jikimi sim camera --listen tcp://127.0.0.1:8554 --id SW-CCTV-0012

Both print one JSON line ``{"event": "...listening", "url": ...}`` once they accept connections
(port 0 picks a free port), then run until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from shared import logs
from shared.cli import Cli, parse_listen, until_stopped
from shared.errors import ConfigError
from shared.tls import TlsFiles

log = logging.getLogger(__name__)


def register(cli: Cli) -> None:
    p = cli.command("receiver", "a reference city-centre alert receiver (CAP 1.2, platform event, webhook)",
                    _receiver)
    p.add_argument("--listen", required=True, metavar="tcp://HOST:PORT")
    p.add_argument("--db", type=Path, help="SQLite file for received alerts (default: memory only)")
    p.add_argument("--fail-first", type=int, default=0, metavar="N", help="answer the first N requests with 503")
    p.add_argument("--strict", action="store_true",
                   help="refuse (422) CAP that does not validate, or (with --ca-bundle) does not verify")
    p.add_argument("--ca-bundle", type=Path, metavar="FILE",
                   help="verify CAP signatures (XML-DSig) against these CAs (PEM); the outcome is stored per alert")
    p.add_argument("--cert", type=Path, help="serve HTTPS with this certificate (needs --key)")
    p.add_argument("--key", type=Path)
    p.add_argument("--ca", type=Path, help="require client certificates issued by this CA")
    p.add_argument("--crl", type=Path, help="... and not revoked in this CRL")
    schema = p.add_mutually_exclusive_group()
    schema.add_argument("--schema", type=Path, help="CAP-v1.2.xsd (default: the reference data's)")
    schema.add_argument("--no-schema", action="store_true", help="read CAP tolerantly without validating")


def _receiver(args: argparse.Namespace) -> int:
    host, port = parse_listen(args.listen)
    tls: TlsFiles | None = None
    if args.cert or args.key:
        if not (args.cert and args.key):
            raise ConfigError("--cert/--key", "", "give both, or neither")
        # server_context always loads a CA; without --ca the server's own chain is the trust file.
        tls = TlsFiles(ca=args.ca or args.cert, cert=args.cert, key=args.key)
    elif args.ca:
        raise ConfigError("--ca", "", "client certificates need HTTPS: give --cert and --key too")
    from hub import receiver  # only here: `jikimi edge run` must not load the receiver's stack
    from hub.forward.capread import CapSchema

    schema = None if args.no_schema else CapSchema(args.schema)
    if args.ca_bundle is not None and not args.ca_bundle.is_file():
        raise ConfigError(str(args.ca_bundle), "--ca-bundle", "no such file")
    logs.setup()

    async def main() -> None:
        async with receiver.serve(host=host, port=port, db=args.db, tls=tls, require_client_cert=bool(args.ca),
                                  crl=args.crl, fail_first=args.fail_first, strict=args.strict,
                                  schema=schema, ca_bundle=args.ca_bundle) as running:
            log.info("receiver.listening", extra={"url": running.url, "fail_first": args.fail_first})
            await until_stopped()

    asyncio.run(main())
    return 0
