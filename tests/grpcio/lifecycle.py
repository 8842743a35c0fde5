"""A whole pod lifecycle through Python grpcio with a default channel on unix:///...

grpcio (1.57 and later) sends the %-encoded socket path as the HTTP/2 :authority; crisp must
answer it with no channel option. Usage: lifecycle.py SOCKET STUBS_DIR LOG_DIR NAME.
Every check prints what it saw; the first failed check exits non-zero with its reason.
"""

import json
import sys

import grpc

socket, stubs, log_dir, name = sys.argv[1:5]
sys.path.insert(0, stubs)
import api_pb2 as cri  # noqa: E402  (generated into STUBS_DIR by grpc_tools.protoc)
import api_pb2_grpc as cri_grpc  # noqa: E402


def check(ok, what, seen):
    print(("ok   " if ok else "FAIL ") + what + ": " + str(seen).replace("\n", " "))
    if not ok:
        sys.exit(1)


channel = grpc.insecure_channel("unix://" + socket)
runtime = cri_grpc.RuntimeServiceStub(channel)
images = cri_grpc.ImageServiceStub(channel)

v = runtime.Version(cri.VersionRequest(version=""), timeout=30)
check(v.version == "0.1.0", "Version.version", v.version)
check(v.runtime_name == "crisp", "Version.runtime_name", v.runtime_name)
check(v.runtime_version != "", "Version.runtime_version", v.runtime_version)
check(v.runtime_api_version == "v1", "Version.runtime_api_version", v.runtime_api_version)

st = runtime.Status(cri.StatusRequest(verbose=False), timeout=30)
conditions = {c.type: c.status for c in st.status.conditions}
check(conditions.get("RuntimeReady") is True, "Status RuntimeReady", conditions)
check(conditions.get("NetworkReady") is True, "Status NetworkReady", conditions)

config = cri.PodSandboxConfig(
    metadata=cri.PodSandboxMetadata(name=name, namespace="grpcio", uid=name + "-uid", attempt=1),
    hostname=name,
    log_directory=log_dir,
    labels={"app": "grpcio"},
    annotations={"made-by": "grpcio"},
)
run = runtime.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120)
sid = run.pod_sandbox_id
check(len(sid) == 64 and all(c in "0123456789abcdef" for c in sid), "RunPodSandbox id", sid)

s = runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=30).status
check(s.id == sid, "status.id", s.id)
check(s.metadata.name == name and s.metadata.namespace == "grpcio", "status.metadata", s.metadata)
check(s.metadata.uid == name + "-uid" and s.metadata.attempt == 1, "status.metadata.uid", s.metadata)
check(s.state == cri.SANDBOX_READY, "status.state", s.state)
check(s.created_at > 0, "status.created_at", s.created_at)
check(s.network.ip.count(".") == 3, "status.network.ip", s.network.ip)
check(dict(s.labels) == {"app": "grpcio"}, "status.labels", dict(s.labels))
check(dict(s.annotations) == {"made-by": "grpcio"}, "status.annotations", dict(s.annotations))

listed = runtime.ListPodSandbox(
    cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector={"app": "grpcio"})),
    timeout=30,
).items
check([p.id for p in listed] == [sid], "ListPodSandbox by label", [p.id for p in listed])
check(listed[0].state == cri.SANDBOX_READY, "listed state", listed[0].state)

runtime.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
s = runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=30).status
check(s.state == cri.SANDBOX_NOTREADY, "state after stop", s.state)
check(s.network.ip == "", "ip after stop", s.network.ip)

runtime.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)
try:
    runtime.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=sid), timeout=30)
    check(False, "status after remove", "answered")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.NOT_FOUND, "status after remove", e.code())
    check(sid[:12] in e.details(), "NotFound names the sandbox", e.details())

fs = images.ImageFsInfo(cri.ImageFsInfoRequest(), timeout=30)
check(len(fs.image_filesystems) >= 1, "ImageFsInfo filesystems", len(fs.image_filesystems))
first = fs.image_filesystems[0]
check(first.timestamp > 0, "ImageFsInfo timestamp", first.timestamp)
check(first.HasField("used_bytes"), "ImageFsInfo used_bytes set", first.used_bytes)
check(first.fs_id.mountpoint != "", "ImageFsInfo mountpoint", first.fs_id.mountpoint)

print(json.dumps({"lifecycle": "passed", "sandbox": sid, "grpcio": grpc.__version__}))
