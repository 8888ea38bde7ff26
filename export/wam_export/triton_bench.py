"""Per-request latency of one model on a running Triton server over both KServe v2 transports: HTTP
with binary tensors (what the node's `remote` backend uses) and gRPC, on the same random inputs of the
model's declared shapes. Prints a markdown table. Needs tritonclient (requirements/triton.txt: run it
with .prefix-triton/bin/python).

    python -m wam_export.triton_bench --http 127.0.0.1:8000 --grpc 127.0.0.1:8001 --model denoise
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

_NP = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64}


def _inputs(meta: dict[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for t in meta["inputs"]:
        shape = [max(int(d), 1) for d in t["shape"]]
        dtype = _NP[t["datatype"]]
        out[t["name"]] = (
            np.ones(shape, dtype) if dtype == np.int64 else rng.standard_normal(shape).astype(dtype)
        )
    return out


def _time(call: Callable[[], object], n: int) -> list[float]:
    for _ in range(5):
        call()
    ms = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t) * 1e3)
    return ms


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wam_export.triton_bench", description=__doc__)
    ap.add_argument("--http", required=True, help="host:port of the HTTP endpoint")
    ap.add_argument("--grpc", required=True, help="host:port of the gRPC endpoint")
    ap.add_argument("--model", required=True)
    ap.add_argument("--requests", type=int, default=100)
    a = ap.parse_args(argv)

    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    http = httpclient.InferenceServerClient(a.http)
    grpc = grpcclient.InferenceServerClient(a.grpc)
    meta = http.get_model_metadata(a.model)
    feeds = _inputs(meta)
    outputs = [o["name"] for o in meta["outputs"]]
    nbytes = sum(x.nbytes for x in feeds.values())
    types = {t["name"]: t["datatype"] for t in meta["inputs"]}

    def request(client: Any, mod: Any, binary: bool) -> Callable[[], object]:
        ins = []
        for name, x in feeds.items():
            i = mod.InferInput(name, list(x.shape), types[name])
            if binary:
                i.set_data_from_numpy(x, binary_data=True)
            else:
                i.set_data_from_numpy(x)
            ins.append(i)
        if binary:
            outs = [mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
        else:
            outs = [mod.InferRequestedOutput(o) for o in outputs]
        return lambda: client.infer(a.model, ins, outputs=outs)

    rows = [
        ("HTTP, binary tensors", _time(request(http, httpclient, True), a.requests)),
        ("gRPC", _time(request(grpc, grpcclient, False), a.requests)),
    ]
    print(f"model `{a.model}`, {nbytes / 1e3:.1f} kB of inputs, {a.requests} requests each\n")
    print("| transport | p50 ms | p90 ms | mean ms |")
    print("|---|---|---|---|")
    for name, ms in rows:
        p50, p90 = np.percentile(ms, [50, 90])
        print(f"| {name} | {p50:.2f} | {p90:.2f} | {np.mean(ms):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
