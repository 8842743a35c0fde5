#!/usr/bin/env python3
"""Writes the golden NRI wire fixtures (*.hex) in this directory.

An encoder of its own, independent of prost and of crisp: the field numbers are those of
containerd/nri v0.12.2 pkg/api/api.proto and containerd/ttrpc request.proto, the framing is
NRI's multiplexer (pkg/net/multiplex/mux.go: conn id u32 BE, length u32 BE, payload) carrying
ttrpc messages (channel.go: length u32 BE, stream id u32 BE, type u8, flags u8, payload), and a
ttrpc message goes out as two frames, header then payload, as Go's ttrpc writes it.
Run it again after changing a fixture's content: python3 tests/nri-wire/make.py
"""
import os

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def field(num, value):
    """A proto3 field: int -> varint (wire type 0), bytes/str -> length-delimited (2)."""
    if isinstance(value, int):
        return varint(num << 3 | 0) + varint(value) if value else b""
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value if value else b""

def message(*fields):
    return b"".join(fields)

def frames(conn, stream, kind, payload):
    header = len(payload).to_bytes(4, "big") + stream.to_bytes(4, "big") + bytes([kind, 0])
    out = conn.to_bytes(4, "big") + len(header).to_bytes(4, "big") + header
    return out + conn.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload

def request(service, method, payload, timeout_nano):
    return message(field(1, service), field(2, method), field(3, payload), field(4, timeout_nano))

PLUGIN, RUNTIME = "nri.pkg.api.v1alpha1.Plugin", "nri.pkg.api.v1alpha1.Runtime"
ID = "a" * 64
NETNS = "/var/run/netns/crisp-" + ID[:12]

def pod():
    label = message(field(1, "app"), field(2, "web"))
    namespace = message(field(1, "network"), field(2, NETNS))
    linux = message(field(3, "/kubepods"), field(5, namespace))
    return message(
        field(1, ID), field(2, "web-0"), field(3, "uid-1"), field(4, "default"),
        field(5, label), field(8, linux), field(10, "10.88.0.5"),
    )

FIXTURES = {
    # The plugin's first call, on conn 2: RegisterPlugin{plugin_name, plugin_idx, NRI_version}.
    "register": frames(2, 1, 1, request(RUNTIME, "RegisterPlugin", message(
        field(1, "test"), field(2, "05"), field(3, "v0.12.2")), 5_000_000_000)),
    # crisp's first call, on conn 1: Configure{runtime_name, runtime_version, timeouts (ms),
    # NRI_version}; no config for an external plugin.
    "configure": frames(1, 1, 1, request(PLUGIN, "Configure", message(
        field(2, "crisp"), field(3, "0.1.0"), field(4, 5000), field(5, 2000),
        field(6, "v0.12.2")), 2_000_000_000)),
    # Then Synchronize{pods: [one pod], more: false}.
    "synchronize": frames(1, 3, 1, request(PLUGIN, "Synchronize", message(
        field(1, pod())), 2_000_000_000)),
    # An event: RunPodSandbox{pod}.
    "run_pod_sandbox": frames(1, 5, 1, request(PLUGIN, "RunPodSandbox", message(
        field(1, pod())), 2_000_000_000)),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, data in FIXTURES.items():
    with open(os.path.join(here, name + ".hex"), "w") as f:
        f.write(f"# {name}: the bytes on the NRI socket; regenerate with make.py\n")
        for i in range(0, len(data), 32):
            f.write(data[i:i + 32].hex() + "\n")
