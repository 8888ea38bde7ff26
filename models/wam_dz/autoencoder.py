"""The trained wam_sim autoencoder (models/wam_model/nets.py `AutoEncoder`) with its weights read
back from the committed ONNX stages models/wam_sim/{encode,decode}.onnx (the checkpoint is not in
the repository): the same latents [8, 8, 8] per 64x64 frame, so a model built on them can be trained
on the simulator's data and its encode/decode stages are the committed ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor
from wam_model.nets import AutoEncoder
from wam_model.spec import BUNDLE_DIR, ModelSpec


def load_sim_autoencoder(bundle: Path = BUNDLE_DIR) -> AutoEncoder:
    ae = AutoEncoder(ModelSpec())
    state: dict[str, Tensor] = {}
    for stage, (mean_op, std_op) in (("encode", ("Sub", "Div")), ("decode", ("Add", "Mul"))):
        g = onnx.load(str(bundle / f"{stage}.onnx")).graph
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for name, arr in inits.items():
            if name.startswith("ae."):
                state[name[3:]] = torch.from_numpy(np.array(arr))
        # the per-channel latent statistics were folded into the graph as [1, C, 1, 1] constants
        for node in g.node:
            for inp in node.input:
                if inp in inits and not inp.startswith("ae.") and inits[inp].ndim == 4:
                    key = "lat_mean" if node.op_type == mean_op else "lat_std"
                    assert node.op_type in (mean_op, std_op), node.op_type
                    state[key] = torch.from_numpy(np.array(inits[inp]).reshape(-1))
    ae.load_state_dict(state)
    return ae.eval()
