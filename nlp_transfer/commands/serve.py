"""``nlp-transfer serve MODEL_DIR``: the classifier behind a TEI-compatible HTTP endpoint with dynamic batching."""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from typing import Any

from ..errors import UserInputError
from ..options import PositiveInt, with_default
from . import add_backend, quiet_libraries

API_KEY_ENV = "NLP_TRANSFER_API_KEY"


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {text!r}")
    return int(text)


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds (a number >= 0), got {text!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to 10000, got {text!r}")
    return value


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``serve`` subcommand."""
    serve = sub.add_parser(
        "serve", parents=[common], usage="%(prog)s MODEL_DIR [OPTIONS]",
        help="Serve a trained (or exported ONNX) model over HTTP: POST /predict, GET /health, GET /info.",
        description="Serve a model folder with FastAPI + uvicorn. POST /predict takes {\"inputs\": \"text\" | [\"t1\", "
        "...], \"top_k\": k} and answers like pipeline() (the payloads of Hugging Face text-embeddings-inference). "
        "Concurrent requests are gathered into dynamic batches. SIGTERM or Ctrl-C stops accepting connections and "
        "finishes the requests in flight. Needs pip install 'nlp-transfer[serve]'.",
    )
    model, network, batching, limits = (serve.add_argument_group(t) for t in ("model", "network", "batching", "limits"))
    model.add_argument("model_dir", metavar="MODEL_DIR", help="Folder written by nlp-transfer train or export (or a Hub id).")
    add_backend(model)
    network.add_argument("--host", default="127.0.0.1",
                         help=with_default("Address to bind; 0.0.0.0 exposes the server to the network.", "127.0.0.1"))
    network.add_argument("--port", type=_port, default=8080, help=with_default("TCP port.", 8080))
    network.add_argument("--api-key", metavar="KEY",
                         help=f"Require 'Authorization: Bearer KEY' on /predict and /info; default: the {API_KEY_ENV} "
                         "environment variable if set (safer: a command line is visible to other users), else no key.")
    batching.add_argument("--max-batch-size", type=PositiveInt("--max-batch-size"), default=64, metavar="N",
                          help=with_default("Most texts gathered into one forward pass.", 64))
    batching.add_argument("--max-wait-ms", type=_milliseconds, default=5.0, metavar="MS",
                          help=with_default("How long a request waits for others to share its forward pass.", 5))
    batching.add_argument("--no-batching", action="store_true", help="Run every request as its own forward pass.")
    limits.add_argument("--max-inputs", type=PositiveInt("--max-inputs"), default=256, metavar="N",
                        help=with_default("Most texts in one request; more get 413.", 256))
    limits.add_argument("--max-body-bytes", type=PositiveInt("--max-body-bytes"), default=1_048_576, metavar="BYTES",
                        help=with_default("Largest request body; larger gets 413.", 1_048_576))
    limits.add_argument("--max-queue", type=PositiveInt("--max-queue"), default=1024, metavar="N",
                        help=with_default("Most texts waiting for a forward pass; a request that would go past it gets "
                                          "503 with a Retry-After header instead of an ever longer wait. At least "
                                          "--max-inputs.", 1024))
    limits.add_argument("--drain-seconds", type=PositiveInt("--drain-seconds"), default=30, metavar="S",
                        help=with_default("On SIGTERM, how long requests in flight may take to finish.", 30))
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from ..extras import require_extra

    require_extra("serve", "nlp-transfer serve")
    import uvicorn

    from ..inference import load_classifier
    from ..serving import ServeSettings, create_app

    settings = ServeSettings(max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                             batching=not args.no_batching, max_inputs=args.max_inputs,
                             max_body_bytes=args.max_body_bytes, max_queue=args.max_queue,
                             api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None,
                             model_id=os.path.basename(os.path.normpath(args.model_dir)))
    listener = listen(args.host, args.port)  # before the model loads: a taken port fails in a second, not minutes
    port = listener.getsockname()[1]
    quiet_libraries(args.quiet)
    clf = load_classifier(args.model_dir, backend=args.backend)
    config = uvicorn.Config(create_app(clf, settings), host=args.host, port=port, log_level="warning" if args.quiet else "info",
                            access_log=False, timeout_graceful_shutdown=args.drain_seconds, lifespan="on")
    print(f"serving {args.model_dir} ({len(clf.labels)} labels, {clf.device}) on http://{args.host}:{port} "
          "- POST /predict, GET /health, GET /info", file=sys.stderr, flush=True)
    uvicorn.Server(config).run(sockets=[listener])
    return 0


_BIND_HINTS = {
    errno.EADDRINUSE: "another process listens there; stop it or choose another --port",
    errno.EACCES: "ports below 1024 need administrator rights; choose a --port from 1024 up",
    errno.EADDRNOTAVAIL: "that address is not one of this machine's; use 127.0.0.1 (this machine only) or 0.0.0.0 (all)",
}


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` for uvicorn (``port`` 0: a free one), or a one-line refusal.

    Raises:
        UserInputError: the host does not resolve, or the address cannot be bound (taken, not ours, privileged).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise UserInputError(f"--host {host!r} is not an address or a name this machine resolves ({err.strerror}); "
                             "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface).") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait for TIME_WAIT
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        hint = _BIND_HINTS.get(err.errno, "check --host and --port")
        raise UserInputError(f"cannot listen on {host}:{port} ({err.strerror}); {hint}.") from None
    sock.set_inheritable(True)
    return sock
