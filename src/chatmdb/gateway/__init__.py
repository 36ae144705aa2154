"""The gateway: a Socket.IO server and an HTTP API that persist every write before they answer it.

:func:`create_app` builds the ASGI app on an open store; :func:`serve` opens
a store and runs the app under uvicorn. The modules, each with one job:

* :mod:`.payloads`: what clients send, declared once for both transports;
* :mod:`.service`: reads, writes and their broadcasts, in-flight writes;
* :mod:`.events`: the Socket.IO events (their table is there);
* :mod:`.http`: the HTTP API (its table is there);
* :mod:`.recovery`: connection state recovery, kept in the store;
* :mod:`.packets`: malformed Socket.IO packets, answered rather than logged;
* :mod:`.auth`: tokens (static and JWT), principals and their grants, the rule of every operation;
* :mod:`.cors`: which web origins may use the gateway (``--cors-origins``);
* :mod:`.guard`: the limits that keep one client from hurting the others;
* :mod:`.fanout`: room events across worker processes, from the store's event log;
* :mod:`.retention`: pruning old messages while serving;
* :mod:`.backups`: scheduled, verified hot backups while serving;
* :mod:`.middleware`: ASGI middleware (Host names, body size, abandoned polls, log redaction);
* :mod:`.app`: the app assembled, and the server.
"""

from .app import Gateway, GatewayApp, create_app, serve
from .guard import Limits

__all__ = ["Gateway", "GatewayApp", "Limits", "create_app", "serve"]
