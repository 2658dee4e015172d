"""Regenerates python_*.hex and large_sni_last.hex (see README.md).

Python's ssl module writes a real ClientHello into a MemoryBIO; large_sni_last.hex is
python_tls13_sni_alpn.hex with its padding extension (0x0015) grown to make the record 1,901
bytes and the SNI extension moved last, every length fixed. The random and key shares change
on every run, so regenerated files differ from the committed ones; their JA4 does not.
"""
import ssl
import struct


def hello(server_hostname, alpn=None, maximum_version=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if maximum_version:
        ctx.maximum_version = maximum_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def large_sni_last(record, target=1901):
    body = record[9:]  # record header (5) and handshake header (4)
    p = 2 + 32
    p += 1 + body[p]  # session id
    p += 2 + struct.unpack(">H", body[p:p + 2])[0]  # cipher suites
    p += 1 + body[p]  # compression methods
    head, p = body[:p], p + 2
    extensions = []
    while p < len(body):
        kind, length = struct.unpack(">HH", body[p:p + 4])
        extensions.append((kind, body[p + 4:p + 4 + length]))
        p += 4 + length
    grow = target - len(record)
    moved = [(k, bytes(len(d) + grow) if k == 0x15 else d) for k, d in extensions if k != 0]
    moved += [(k, d) for k, d in extensions if k == 0]
    block = b"".join(struct.pack(">HH", k, len(d)) + d for k, d in moved)
    new_body = head + struct.pack(">H", len(block)) + block
    message = b"\x01" + struct.pack(">I", len(new_body))[1:] + new_body
    return record[:3] + struct.pack(">H", len(message)) + message


def write(name, data):
    with open(name, "w") as f:
        f.write(data.hex() + "\n")


tls13 = hello("www.example.com", ["h2", "http/1.1"])
write("python_tls13_sni_alpn.hex", tls13)
write("python_tls12_no_sni.hex", hello(None, None, ssl.TLSVersion.TLSv1_2))
write("large_sni_last.hex", large_sni_last(tls13))
