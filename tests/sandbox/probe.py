#!/usr/bin/python3
"""Network probes for the sandbox's firewall checks.

    probe.py connect [--timeout S] HOST:PORT...   one line per target: "HOST:PORT RESULT"
        RESULT is open, refused, unreachable, timeout or error:<text>; all targets in parallel.
    probe.py listen [--seconds S] PORT...          accept and close connections for S seconds;
        prints "listening" once every port is bound.
"""

import argparse
import errno
import selectors
import socket
import sys
import threading
import time


def connect(target, timeout):
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return "open"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        if e.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            return "unreachable"
        if e.errno == errno.ETIMEDOUT:
            return "timeout"
        return "error:" + (e.strerror or str(e)).replace(" ", "_")


def cmd_connect(args):
    results = {}

    def run(t):
        results[t] = connect(t, args.timeout)

    threads = [threading.Thread(target=run, args=(t,)) for t in args.targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in args.targets:
        print(t, results[t])
    return 0


def cmd_listen(args):
    sel = selectors.DefaultSelector()
    socks = []
    for port in args.ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    print("listening", flush=True)
    end = time.monotonic() + args.seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        for key, _ in sel.select(timeout=left):
            try:
                conn, _ = key.fileobj.accept()
                conn.close()
            except OSError:
                pass
    for s in socks:
        s.close()
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("connect")
    c.add_argument("--timeout", type=float, default=3.0)
    c.add_argument("targets", nargs="+")
    l = sub.add_parser("listen")
    l.add_argument("--seconds", type=float, default=30.0)
    l.add_argument("ports", nargs="+", type=int)
    args = p.parse_args()
    return cmd_connect(args) if args.cmd == "connect" else cmd_listen(args)


if __name__ == "__main__":
    sys.exit(main())
