"""A pvpython client for `pvlaunch connect --client pvpython --script demo-render.py [PNG]`.

pvlaunch starts it before submitting the job, with PVLAUNCH_PORT (where to listen),
PVLAUNCH_TIMEOUT (how long the job may take to start and connect) and PVLAUNCH_CONNECT_ID in
the environment. It listens for pvserver's reverse connection, builds a small pipeline on the
server, renders it there (remote rendering forced), saves a PNG here, and prints which server
ranks produced the data. Exit status: 0 ok, 3 no server connected in time.
"""

import os
import sys
import time

from paraview import servermanager as sm
from paraview.modules.vtkRemotingCore import vtkProcessModule
import paraview.simple as simple


def connect(port, timeout):
    # paraview.simple.ReverseConnect waits only 60 s: a queued job needs longer.
    session = sm.vtkSMSessionClient()
    if not session.Connect("csrc://localhost:%d" % port, timeout):
        return None
    cid = vtkProcessModule.GetProcessModule().RegisterSession(session)
    conn = sm.GetConnectionFromId(cid)
    sm.SetActiveConnection(conn)
    simple._initializeSession(conn)
    return conn


def main():
    png = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "pvlaunch-demo.png")
    port = int(os.environ["PVLAUNCH_PORT"])
    timeout = int(os.environ.get("PVLAUNCH_TIMEOUT", "600"))
    t0 = time.monotonic()
    conn = connect(port, timeout)
    if conn is None:
        print("demo: no pvserver connected within %d s" % timeout, flush=True)
        return 3
    print("demo: connected after %.1f s to %d server rank(s)" % (time.monotonic() - t0, conn.GetNumberOfDataPartitions()), flush=True)

    sphere = simple.Sphere(ThetaResolution=96, PhiResolution=96)
    ids = simple.ProcessIdScalars(Input=sphere)
    data = sm.Fetch(ids)
    arr = data.GetPointData().GetArray("ProcessId")
    ranks = sorted({int(arr.GetValue(i)) for i in range(arr.GetNumberOfTuples())})
    print("demo: data from server ranks %s" % " ".join(map(str, ranks)), flush=True)

    view = simple.CreateRenderView()
    view.ViewSize = [800, 600]
    view.RemoteRenderThreshold = 0  # render on the server
    display = simple.Show(ids, view)
    simple.ColorBy(display, ("POINTS", "ProcessId"))
    display.RescaleTransferFunctionToDataRange(True)
    simple.ResetCamera(view)
    simple.SaveScreenshot(png, view, ImageResolution=[800, 600])
    print("demo: saved %s" % png, flush=True)
    sm.Disconnect(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
