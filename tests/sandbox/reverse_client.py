"""A ParaView client that waits for a reverse connection and proves which server ranks answered.

    pvpython reverse_client.py --port P [--timeout S] [--expect-ranks N]

Listens on P (like `paraview --url=csrc://localhost:P`), waits up to S seconds for
`pvserver --reverse-connection --server-port=P ...`, then builds a sphere on the server, colours
it by process id and fetches it. Prints, one per line:

    reverse_client: connected after <seconds>s
    reverse_client: ranks <number of server processes>
    reverse_client: process ids <sorted distinct ProcessId values of the fetched data>
    reverse_client: ok

Exit status: 0 ok, 2 fewer ranks answered than --expect-ranks, 3 nobody connected in time.

ParaView 5.11's paraview.simple.ReverseConnect(port) builds its URL by string concatenation (the
port must be a str) and always waits the built-in 60 s; this script opens the session itself to
choose the timeout. ParaView prints "Accepting connection(s): <host>:<port>" once it listens.
"""

import argparse
import sys
import time

from paraview import servermanager as sm
from paraview.modules.vtkRemotingCore import vtkProcessModule
import paraview.simple as simple


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--timeout", type=int, default=120, help="seconds to wait for pvserver")
    p.add_argument("--expect-ranks", type=int, default=0)
    args = p.parse_args()

    t0 = time.monotonic()
    session = sm.vtkSMSessionClient()
    if not session.Connect("csrc://localhost:%d" % args.port, args.timeout):
        print("reverse_client: no pvserver connected within %ds" % args.timeout, flush=True)
        return 3
    print("reverse_client: connected after %.1fs" % (time.monotonic() - t0), flush=True)
    cid = vtkProcessModule.GetProcessModule().RegisterSession(session)
    conn = sm.GetConnectionFromId(cid)
    sm.SetActiveConnection(conn)
    simple._initializeSession(conn)

    ranks = conn.GetNumberOfDataPartitions()
    print("reverse_client: ranks %d" % ranks, flush=True)

    sphere = simple.Sphere(ThetaResolution=32, PhiResolution=32)
    ids = simple.ProcessIdScalars(Input=sphere)
    data = sm.Fetch(ids)
    arr = data.GetPointData().GetArray("ProcessId")
    seen = sorted({int(arr.GetValue(i)) for i in range(arr.GetNumberOfTuples())})
    print("reverse_client: process ids %s" % " ".join(str(i) for i in seen), flush=True)

    sm.Disconnect(conn)
    if args.expect_ranks and (ranks < args.expect_ranks or len(seen) < args.expect_ranks):
        print("reverse_client: expected %d ranks" % args.expect_ranks, flush=True)
        return 2
    print("reverse_client: ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
