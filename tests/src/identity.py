"""Processes for egret's process-identity end-to-end tests (tests/tests/identity.rs).

Each mode ends in one process (or thread) that connects over TCP, prints one JSON line
`{"pid", "tid", "ppid", "port", "uids", "gids"}` (uids/gids: getresuid/getresgid at the moment of
the connect), and then holds the connection until FILE exists (60 s at most), so that the test
can read the ground truth in /proc while the process is still there.

    identity.py connect --connect IP:PORT --hold-until FILE [--wait-for FILE] [--setsid]
                        [--thread | --fork] [--then-setres R,E,S --then-connect IP:PORT] [MARKER...]
        --wait-for: wait (60 s at most) until FILE exists before connecting.
        --setsid: become a session leader without a controlling terminal first.
        --thread: a second thread connects (the main thread waits for it).
        --fork: a forked child connects, without exec (the parent waits for it).
        --then-setres: after the first connect, setresgid(R,E,S) and setresuid(R,E,S), then
                       connect to --then-connect (a second line).
    identity.py reexec ARGS...    exec /proc/self/exe with argv [sys.executable, this, ARGS...]
    identity.py memfd NAME fd|path BINARY ARGV...
                                  copy BINARY into memfd_create(NAME) and exec it with ARGV:
                                  fexecve(fd) (`fd`), or execve("/proc/self/fd/N") (`path`)
    identity.py pty ARGV...       run ARGV on a new pseudo-terminal (its controlling terminal),
                                  copy its output to stdout, exit with its status

Extra MARKER arguments are ignored (the tests find their lines by them).
"""

import json
import os
import pty
import socket
import sys
import threading
import time


def wait_file(path):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def connect_once(addr, hold_until=None):
    """Connects to addr, prints the JSON line, holds until hold_until exists (if given)."""
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    line = {
        "pid": os.getpid(),
        "tid": threading.get_native_id(),
        "ppid": os.getppid(),
        "port": int(port),
        "uids": list(os.getresuid()),
        "gids": list(os.getresgid()),
    }
    print(json.dumps(line), flush=True)
    if hold_until:
        wait_file(hold_until)
    s.close()


def opt(args, name, default=None):
    return args[args.index(name) + 1] if name in args else default


def ids(text):
    return [int(x) for x in text.split(",")]


def connect(args):
    addr, hold = opt(args, "--connect"), opt(args, "--hold-until")
    if "--wait-for" in args:
        wait_file(opt(args, "--wait-for"))
    if "--setsid" in args:
        os.setsid()
    setres, second = opt(args, "--then-setres"), opt(args, "--then-connect")

    def work():
        connect_once(addr, None if setres else hold)
        if setres:
            r, e, s = ids(setres)
            os.setgroups([])
            os.setresgid(r, e, s)
            os.setresuid(r, e, s)
            connect_once(second, hold)

    if "--thread" in args:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    elif "--fork" in args:
        child = os.fork()
        if child == 0:
            try:
                work()
            finally:
                os._exit(0)
        _, status = os.waitpid(child, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    else:
        work()


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "connect":
        connect(args)
    elif mode == "reexec":
        os.execv("/proc/self/exe", [sys.executable, os.path.abspath(__file__)] + args)
    elif mode == "memfd":
        name, via, binary, argv = args[0], args[1], args[2], args[3:]
        fd = os.memfd_create(name, 0)
        with open(binary, "rb") as f:
            data = memoryview(f.read())
        while data:
            data = data[os.write(fd, data):]
        target = fd if via == "fd" else f"/proc/self/fd/{fd}"
        os.execve(target, argv, dict(os.environ))
    elif mode == "pty":
        pid, master = pty.fork()
        if pid == 0:
            os.execvp(args[0], args)
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
