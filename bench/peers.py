"""Minimal echo servers to compare against, each as its library's docs
would write it: /ws echoes every message with its type, /readyz answers 200.

    python bench/peers.py tornado|tornado-uvloop|websockets|aiohttp|picows PORT

(The seed's Go server is bench/seed-go/main.go; bench/run.py builds it.)
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def tornado_echo(port: int) -> None:
    import tornado.web
    import tornado.websocket

    class Echo(tornado.websocket.WebSocketHandler):
        def on_message(self, message: str | bytes) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

    class Ready(tornado.web.RequestHandler):
        def get(self) -> None:
            self.write("ok")

    app = tornado.web.Application(
        [("/ws", Echo), ("/readyz", Ready)], websocket_max_message_size=64 << 20
    )
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


async def websockets_echo(port: int) -> None:
    from http import HTTPStatus

    from websockets.asyncio.server import serve

    async def echo(ws):  # type: ignore[no-untyped-def]
        async for message in ws:
            await ws.send(message)

    def ready(connection, request):  # type: ignore[no-untyped-def]
        if request.path == "/readyz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        return None

    async with serve(
        echo, "127.0.0.1", port, process_request=ready, max_size=64 << 20, compression=None
    ):
        await asyncio.Event().wait()


async def aiohttp_echo(port: int) -> None:
    from aiohttp import WSMsgType, web

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=64 << 20)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.get("/ws", ws_handler), web.get("/readyz", ready)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def picows_echo(port: int) -> None:
    """picows's own server, as its echo example writes it: frames are
    echoed as they come (a fragmented message fragment by fragment)."""
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
            elif frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION):
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)

    def route(request: WSUpgradeRequest) -> WSListener | WSUpgradeResponseWithListener | None:
        if request.path == b"/ws":
            return Echo()
        if request.path == b"/readyz":
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_ok_response(b"ok\n"), None
            )
        return None

    # No ``async with server``: on SIGTERM its exit would wait for every
    # client to leave; like the other peers, this one just goes.
    server = await ws_create_server(route, "127.0.0.1", port, max_frame_size=64 << 20)
    await asyncio.Event().wait()
    server.close()


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    servers = {
        "tornado": tornado_echo,
        "tornado-uvloop": tornado_echo,
        "websockets": websockets_echo,
        "aiohttp": aiohttp_echo,
        "picows": picows_echo,  # on uvloop, as picows's docs recommend
    }
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if name.endswith("-uvloop") or name == "picows":
        import uvloop

        uvloop.run(servers[name](port))
    else:
        asyncio.run(servers[name](port))


if __name__ == "__main__":
    main()
