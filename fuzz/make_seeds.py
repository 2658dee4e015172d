#!/usr/bin/env python3
"""Writes the seeds of the fuzz targets whose seeds are not written by a unit test
(dns_parse, payload_parse: see README.md). Run from anywhere: `python3 fuzz/make_seeds.py`.

Sources: the YAML examples of docs/policy.md and docs/config.md, the files of packaging/etc/egret
and the ConfigMap of deploy/kubernetes; the cgroup paths of agent/src/container/path.rs's tests; a `docker inspect`
answer shaped like agent/src/container/docker.rs's test document; containerd and CRI-O answers
encoded from the fields of their tests; sock_diag dumps read from this machine's kernel;
egret's own output lines (--lines FILE..., from an e2e run: EGRET_E2E_KEEP=1); /proc text of
this machine.
"""
import hashlib, os, re, socket, struct, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
ID = "3f1c2b9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"
ID2 = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
UID = "4c8f1a2b-3d4e-5f60-7182-93a4b5c6d7e8"


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def yaml_blocks(path):
    return re.findall(r"```yaml\n(.*?)```", read(path), re.S)


def configmap():
    """The ConfigMap's files (`name: |` blocks), unindented."""
    text = read("deploy/kubernetes/configmap.yaml")
    files = {}
    for m in re.finditer(r"^  ([\w.-]+): \|\n((?:    .*\n|\s*\n)*)", text, re.M):
        files[m.group(1)] = re.sub(r"^    ", "", m.group(2), flags=re.M)
    return files


def yaml_seeds():
    for i, block in enumerate(yaml_blocks("docs/policy.md")):
        write("policy_parse", f"docs_policy_{i}.yaml", block)
    for i, block in enumerate(yaml_blocks("docs/config.md")):
        write("config_parse", f"docs_config_{i}.yaml", block)
    # Small ones: every value shape, and the mistakes the parser reports.
    write("config_parse", "small.yaml", "output: /tmp/e.jsonl\nwatch: true\ncontainer-label: [app, 'team*']\n"
          "dns-ttl-floor: 5\ndns-ttl-ceiling: 1\n")
    write("config_parse", "mistakes.yaml", "outptu: x\nring-buffer-size: [1, 2]\nconfig: other.yaml\n"
          "log-level: loud\n? [a]\n: b\n")
    write("config_parse", "packaging_config.yaml", read("packaging/etc/egret/config.yaml"))
    write("policy_parse", "packaging_policy.yaml", read("packaging/etc/egret/policy.yaml"))
    for name, text in configmap().items():
        target = "policy_parse" if "policy" in name else "config_parse"
        write(target, f"configmap_{name}", text)


def cgroup_seeds():
    uid_us = UID.replace("-", "_")
    paths = [
        f"/system.slice/docker-{ID}.scope",
        f"/docker/{ID}/child",
        f"/k8s.io/{ID}",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_us}.slice/cri-containerd-{ID}.scope",
        f"/kubepods/burstable/pod{UID}/crio-{ID}",
        f"/kubepods/besteffort/pod{UID}/{ID}",
        f"/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope",
        f"/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{ID}.scope",
        f"/system.slice/crio-conmon-{ID}.scope",
        "/user.slice/user-1000.slice/session-3.scope",
        "/system.slice/nginx.service",
        f"/libpod_parent/libpod-{ID}",
    ]
    for i, p in enumerate(paths):
        write("cgroup_path", f"path_{i}", p)


def inspect_json(id_):
    return (
        '{"Id": "%s", "Name": "/web", "State": {"Status": "running", "Running": true, "Pid": 4242},'
        ' "Config": {"Image": "nginx:1.25", "Env": ["PATH=/usr/bin"], "Labels": {"app": "web",'
        ' "io.kubernetes.pod.name": "web-0", "io.kubernetes.pod.namespace": "shop",'
        ' "io.kubernetes.container.name": "nginx"}}, "HostConfig": {"Binds": null}}' % id_
    )


def http_seeds():
    body = inspect_json(ID)
    ok = f"HTTP/1.1 200 OK\r\nApi-Version: 1.43\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    half = len(body) // 2
    chunked = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        f"{half:x}\r\n{body[:half]}\r\n{len(body) - half:x};ext=1\r\n{body[half:]}\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    missing = '{"message":"No such container: %s"}' % ID
    notfound = f"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {len(missing)}\r\n\r\n{missing}"
    close = f"HTTP/1.0 500 Internal Server Error\r\n\r\n" + '{"message":"boom"}'
    interim = "HTTP/1.1 100 Continue\r\n\r\n" + ok
    for name, resp, c, m in [("ok", ok, 255, 0), ("ok_trickle", ok, 6, 0), ("chunked", chunked, 31, 0),
                             ("not_found", notfound, 255, 0), ("until_close", close, 255, 0),
                             ("interim", interim, 255, 0), ("small_bound", ok, 255, 0x80 | 8)]:
        write("docker_http", name, bytes([c, m]) + resp.encode())


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(tag, value):
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, int):
        return varint(tag << 3) + varint(value)
    return varint(tag << 3 | 2) + varint(len(value)) + value


def labels(tag, pairs):
    return b"".join(field(tag, field(1, k) + field(2, v)) for k, v in pairs)


def frame(message):
    return b"\0" + struct.pack(">I", len(message)) + message


def grpc_seeds():
    k8s = [("io.kubernetes.container.name", "nginx"), ("io.kubernetes.pod.name", "web-0"),
           ("io.kubernetes.pod.namespace", "shop"), ("io.kubernetes.pod.uid", UID), ("app", "web")]
    container = (field(1, ID) + labels(2, k8s) + field(3, "docker.io/library/nginx:1.25")
                 + field(4, field(1, "io.containerd.runc.v2")) + field(11, ID2))
    write("runtime_grpc", "containerd_get", b"\0" + frame(field(1, container)))
    nerdctl = field(1, ID) + labels(2, [("nerdctl/name", "web")]) + field(3, "nginx:1.25")
    write("runtime_grpc", "containerd_get_nerdctl", b"\0" + frame(field(1, nerdctl)))
    namespaces = field(1, field(1, "k8s.io")) + field(1, field(1, "default") + labels(2, [("a", "b")]))
    write("runtime_grpc", "containerd_namespaces", b"\1" + frame(namespaces))
    status = (field(1, ID) + field(2, field(1, "nginx") + field(2, 1))
              + field(8, field(1, "sha256:a875") + field(18, "nginx:1.25"))
              + field(9, "docker.io/library/nginx@sha256:a875") + labels(12, k8s))
    write("runtime_grpc", "crio_container_status", b"\2" + frame(field(1, status)))
    sandbox = (field(1, ID2) + field(2, field(1, "web-0") + field(2, UID) + field(3, "shop") + field(4, 0))
               + labels(7, k8s[1:]))
    write("runtime_grpc", "crio_sandbox_status", b"\3" + frame(field(1, sandbox)))
    write("runtime_grpc", "empty_answer", b"\0" + frame(b""))
    write("runtime_grpc", "status_not_found", b"\4" + b"5\0container%20" + ID.encode() + b"%3A not found")


def sockdiag_seeds():
    """Real dumps: a listener, a connection to it and its accepted end, IPv4 and IPv6."""
    keep = []
    for family, addr in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]:
        server = socket.socket(family)
        server.bind((addr, 0))
        server.listen()
        client = socket.create_connection(server.getsockname()[:2])
        keep += [server, client, server.accept()[0]]
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    for family, name in [(socket.AF_INET, "v4"), (socket.AF_INET6, "v6")]:
        req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + bytes(48)
        nl.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req)
        n = 0
        while True:
            data = nl.recv(1 << 16)
            write("sockdiag_parse", f"dump_{name}_{n}", data[: 88 * 4 + 20])
            n += 1
            if struct.unpack_from("=H", data, 4)[0] in (2, 3):  # NLMSG_ERROR, NLMSG_DONE
                break
    error = struct.pack("=IHHIIi", 20, 2, 0, 1, 0, -1)
    write("sockdiag_parse", "error", error)


def output_seeds(files):
    """egret's own lines: whole lines, at most 8 KiB of each file (a cut at a line keeps the
    chain), alone and as files of one input."""
    parts = []
    for i, path in enumerate(files):
        data = open(path, "rb").read()
        cut = data[: 8192]
        cut = cut[: cut.rfind(b"\n") + 1]
        parts.append(cut)
        write("verify_lines", f"egret_{i}", b"\0" + cut)
        write("report_lines", f"egret_{i}_text", b"\0" + cut)
        write("report_lines", f"egret_{i}_suggest", b"\4" + cut)
    if len(parts) > 1:
        write("verify_lines", "two_files", b"\0" + parts[0] + b"\0\0" + parts[1])
        write("report_lines", "two_files_json", b"\1" + parts[0] + b"\0\0" + parts[1])


def proc_seeds():
    tcp = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
           "   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0\n"
           "   1: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:0008A8B4 00000000     0        0 12345 4 0000000000000000 20 4 31 10 -1\n")
    tcp6 = ("  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
            "   0: 0000000000000000FFFF00000F02000A:0016 0000000000000000FFFF00000202000A:C350 01 00000000:00000000 02:00000000 00000000     0        0 67890 1 0000000000000000 20 4 0 10 -1\n"
            "   1: 00000000000000000000000001000000:0016 B80D0120000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 0 10 -1\n")
    write("proc_text", "net_tcp", tcp)
    write("proc_text", "net_tcp6", tcp6)
    write("proc_text", "fd_link", "socket:[12345]")
    write("proc_text", "cmdline", b"/usr/bin/python3\0-c\0print('x y')\0\0")
    write("proc_text", "mounts",
          "sysfs /sys sysfs rw,nosuid 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev 0 0\n"
          "tmpfs /run/a\\040b\\011c tmpfs rw 0 0\ncgroup2 /mnt/other\\134x cgroup2 rw 0 0\n")
    write("proc_text", "resolv_conf",
          "# generated\nsearch svc.cluster.local\nnameserver 10.96.0.10\nnameserver fe80::1%eth0 # zone\n"
          "nameserver\t2001:db8::53;x\noptions ndots:5\nnameserver 10.1\n")


if __name__ == "__main__":
    args = sys.argv[1:]
    lines = args[args.index("--lines") + 1:] if "--lines" in args else []
    yaml_seeds()
    cgroup_seeds()
    http_seeds()
    grpc_seeds()
    sockdiag_seeds()
    proc_seeds()
    if lines:
        output_seeds(lines)
