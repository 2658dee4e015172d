"""Servers and clients for egret's first-bytes end-to-end tests (tests/tests/names.rs).

Real TLS on both ends (Python's ssl module, the system's OpenSSL), a real HTTP server
(http.server), and a raw TCP client and server that send and count bytes as they are.

    firstbytes.py tls-server  --bind IP [--port N] --cert FILE --key FILE
    firstbytes.py raw-server  --bind IP [--port N]
    firstbytes.py http-server --bind IP [--port N] --dir DIR
                              (while DIR/.forbid exists, 4 GET requests of 5 get 403)
    firstbytes.py tls-client  --connect IP:PORT [--resolve NAME --dns IP:PORT] [--sni NAME]
                              [--alpn A,B] [--max-tls 1.2] [--timeout S]
                              (TLS 1.2 at least, 1.3 at most unless --max-tls; no certificate check)
    firstbytes.py raw-client  --connect IP:PORT (--hex FILE | --text TEXT) [--truncate N]
                              [--split N --gap-ms MS] [--half-close] [--fastopen]
                              [--timeout S]
                              (--fastopen: TCP Fast Open, the first write in the SYN without
                              a cookie; the server's namespace must allow it)

A server prints `ready <port>` once it listens, then (tls and raw) one JSON line per connection
when it is over: `peer_port`, `received` (the bytes that arrived on the TCP connection, counted
before TLS sees them), and for TLS `handshake` (`ok` or the error), `sni`, `alpn`, `version`.
The TLS server sends `greeting` (one line) after the handshake, then reads until the client
closes. The raw server reads until the client closes its side (or 5 s pass), then closes.

A client prints one JSON line: `address` (connected to), `local_port`, `ok`, and when it failed
`errno` (an OS error number, when the failure was one), `error`, and `stage: connect` when
`connect()` itself failed; `elapsed_ms` from the first byte sent (the ClientHello) to the end; the TLS client `greeting`, `version`, `alpn`; the raw
client `sent` and `received`. It exits 0 when `ok`. `--resolve` asks `--dns` (UDP, one A query
from this process) for NAME and connects to the first address of the answer, on PORT.
"""

import argparse
import ctypes
import http.server
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time

GREETING = b"hello from the egret e2e tls server\n"


def die_with_parent():
    """PR_SET_PDEATHSIG(SIGKILL): a server never outlives the test that started it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def emit(record):
    sys.stdout.write(json.dumps(record, sort_keys=True) + "\n")
    sys.stdout.flush()


# <netinet/tcp.h>, not all in Python's socket module.
TCP_FASTOPEN = 23
TCP_FASTOPEN_CONNECT = 30
TCP_FASTOPEN_NO_COOKIE = 34


def split_addr(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def listener(bind, port):
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    # Accept data in a SYN (TCP Fast Open) where the namespace's net.ipv4.tcp_fastopen lets
    # a server do so (the test that sends it sets that); harmless elsewhere.
    sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN, 16)
    sock.listen(64)
    return sock


def serve(sock, handle):
    emit_ready(sock)
    while True:
        conn, peer = sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def emit_ready(sock):
    sys.stdout.write("ready %d\n" % sock.getsockname()[1])
    sys.stdout.flush()


def tls_server(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.set_alpn_protocols(["http/1.1"])
    names = {}

    def remember_sni(obj, name, _ctx):
        names[id(obj)] = name

    ctx.sni_callback = remember_sni

    def handle(conn, peer):
        record = {"peer_port": peer[1], "received": 0, "handshake": "none"}
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_side=True)

        def flush():
            data = outgoing.read()
            if data:
                conn.sendall(data)

        def feed():
            data = conn.recv(65536)
            if not data:
                raise EOFError("the client closed the connection")
            record["received"] += len(data)
            incoming.write(data)

        conn.settimeout(5)
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    flush()
                    feed()
            flush()
            record.update(handshake="ok", sni=names.get(id(obj)),
                          alpn=obj.selected_alpn_protocol(), version=obj.version())
            obj.write(GREETING)
            flush()
            while True:
                try:
                    if not obj.read(4096):
                        break
                except ssl.SSLWantReadError:
                    flush()
                    feed()
        except (OSError, EOFError, ValueError) as err:
            if record["handshake"] == "none":
                record["handshake"] = "%s: %s" % (type(err).__name__, err)
            else:
                record["after"] = "%s: %s" % (type(err).__name__, err)
        finally:
            conn.close()
            emit(record)

    serve(listener(args.bind, args.port), handle)


def raw_server(args):
    def handle(conn, peer):
        record = {"peer_port": peer[1], "received": 0}
        conn.settimeout(5)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                record["received"] += len(data)
        except OSError as err:
            record["error"] = "%s: %s" % (type(err).__name__, err)
        finally:
            conn.close()
            emit(record)

    serve(listener(args.bind, args.port), handle)


def http_server(args):
    forbid_flag = os.path.join(args.dir, ".forbid")
    requests = [0]
    lock = threading.Lock()

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=args.dir, **kw)

        def do_GET(self):
            # While DIR/.forbid exists, 4 requests of 5 get 403 Forbidden.
            with lock:
                requests[0] += 1
                n = requests[0]
            if os.path.exists(forbid_flag) and n % 5 != 0:
                self.send_error(403)
                return
            super().do_GET()

        def log_message(self, *a):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET

    server = Server((args.bind, args.port), Handler)
    emit_ready(server.socket)
    server.serve_forever()


def resolve(name, dns):
    """One A query for `name` to `dns` from this process; the first address of the answer."""
    host, port = split_addr(dns)
    qid = int.from_bytes(os.urandom(2), "big")
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack(">HH", 1, 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.sendto(query, (host, port))
    while True:
        msg, _ = sock.recvfrom(4096)
        if struct.unpack(">H", msg[:2])[0] == qid:
            break
    sock.close()
    ancount = struct.unpack(">H", msg[6:8])[0]
    pos = 12

    def skip_name(pos):
        while True:
            length = msg[pos]
            if length & 0xC0 == 0xC0:
                return pos + 2
            if length == 0:
                return pos + 1
            pos += 1 + length

    pos = skip_name(pos) + 4
    for _ in range(ancount):
        pos = skip_name(pos)
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            return socket.inet_ntoa(msg[pos:pos + 4])
        pos += rdlen
    raise RuntimeError("no A record for %s in the answer" % name)


def connect(args, result):
    host, port = split_addr(args.connect)
    if getattr(args, "resolve", None):
        host = resolve(args.resolve, args.dns)
    result["address"] = host
    if getattr(args, "fastopen", False):
        # connect() returns at once; the first write goes out in the SYN, no cookie needed.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                             socket.SOCK_STREAM)
        sock.settimeout(args.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_CONNECT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, TCP_FASTOPEN_NO_COOKIE, 1)
        sock.connect((host, port))
    else:
        sock = socket.create_connection((host, port), timeout=args.timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    result["local_port"] = sock.getsockname()[1]
    return sock


def finish(result, start):
    result["elapsed_ms"] = round((time.monotonic() - start) * 1000, 1)
    emit(result)
    return 0 if result.get("ok") else 1


def failed(result, err):
    result.update(ok=False, errno=getattr(err, "errno", None),
                  error="%s: %s" % (type(err).__name__, err))
    if isinstance(err, ssl.SSLError):
        result["errno"] = None


def tls_client(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # The same offer whatever the distribution's OpenSSL defaults: TLS 1.2 and 1.3 only.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.max_tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    result = {"ok": False}
    start = time.monotonic()
    try:
        sock = connect(args, result)
    except OSError as err:
        failed(result, err)
        result["stage"] = "connect"
        return finish(result, start)
    start = time.monotonic()
    try:
        tls = ctx.wrap_socket(sock, server_hostname=args.sni)
        result.update(version=tls.version(), alpn=tls.selected_alpn_protocol())
        greeting = b""
        while not greeting.endswith(b"\n"):
            chunk = tls.recv(4096)
            if not chunk:
                break
            greeting += chunk
        result.update(ok=greeting == GREETING, greeting=greeting.decode("utf-8", "replace"))
        tls.close()
    except OSError as err:
        failed(result, err)
    return finish(result, start)


def raw_client(args):
    if args.hex:
        with open(args.hex) as f:
            data = bytes.fromhex(f.read().strip())
    else:
        data = args.text.encode()
    if args.truncate:
        data = data[:args.truncate]
    result = {"ok": False, "sent": 0, "received": 0}
    start = time.monotonic()
    try:
        sock = connect(args, result)
    except OSError as err:
        failed(result, err)
        result["stage"] = "connect"
        return finish(result, start)
    start = time.monotonic()
    try:
        if args.split:
            sock.sendall(data[:args.split])
            time.sleep(args.gap_ms / 1000)
            sock.sendall(data[args.split:])
        else:
            sock.sendall(data)
        result["sent"] = len(data)
        if args.half_close:
            sock.shutdown(socket.SHUT_WR)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            result["received"] += len(chunk)
        result["ok"] = True
    except OSError as err:
        failed(result, err)
    sock.close()
    return finish(result, start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("tls-server", "raw-server", "http-server"):
        p = sub.add_parser(name)
        p.add_argument("--bind", required=True)
        p.add_argument("--port", type=int, default=0)
        if name == "tls-server":
            p.add_argument("--cert", required=True)
            p.add_argument("--key", required=True)
        if name == "http-server":
            p.add_argument("--dir", required=True)
    for name in ("tls-client", "raw-client"):
        p = sub.add_parser(name)
        p.add_argument("--connect", required=True)
        p.add_argument("--timeout", type=float, default=10)
        p.add_argument("extra", nargs="*", help="ignored (a marker for the test)")
        if name == "tls-client":
            p.add_argument("--resolve")
            p.add_argument("--dns")
            p.add_argument("--sni")
            p.add_argument("--alpn")
            p.add_argument("--max-tls", choices=["1.2"])
        else:
            p.add_argument("--hex")
            p.add_argument("--text")
            p.add_argument("--truncate", type=int)
            p.add_argument("--split", type=int)
            p.add_argument("--gap-ms", type=int, default=100)
            p.add_argument("--half-close", action="store_true")
            p.add_argument("--fastopen", action="store_true")
    args = parser.parse_args()
    if args.command.endswith("-server"):
        die_with_parent()
    run = {
        "tls-server": tls_server,
        "raw-server": raw_server,
        "http-server": http_server,
        "tls-client": tls_client,
        "raw-client": raw_client,
    }[args.command]
    sys.exit(run(args))


if __name__ == "__main__":
    main()
