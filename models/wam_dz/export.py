"""Exports the DreamZero-style WAM (models/wam_sim_dz, format 2: KV cache across chunks, CFG on
video, UniPC order 2 with shift 5, step reuse) and the ACT-like policy (models/wam_sim_act, `solver:
none`) with wam_export, with the weights that `python -m wam_dz.train` wrote (the checkpoint
models/.data/dz_checkpoint.pt; `--untrained`: a seeded random initialization, as the first
bundles were) and the trained wam_sim autoencoder.

The parity episode is a simulator episode (sim/wam_sim's expert, mujoco): per chunk the window of
the T = 2 newest REAL camera frames (15 Hz) and the joint state, a chunk every 0.4 s, 5 chunks for
the WAM (the KV cache holds M = 3 blocks, so it slides at the 4th and 5th) and 3 for ACT. Without
mujoco, synthetic frames are used. The fixtures store the input frames rounded to 2 decimals (fed
so) and the decoded frames to 4 (`wam_export.fixtures`), which keeps them small.

    python -m wam_dz.export [--checkpoint PATH | --untrained] [--out-dz models/wam_sim_dz]
    [--out-act models/wam_sim_act] [--node PATH]
    python -m wam_dz.export --float16 [--out-dz16 models/wam_sim_dz_f16]

`--float16` exports the WAM alone with float16 stages (weights and every float tensor at the stage
boundaries), checked against the float32 model within wam_export's float16 tolerance."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from wam_export import (
    ActionSpec,
    BundleSpec,
    Camera,
    ContextState,
    Guidance,
    Instruction,
    SamplerSpec,
    StateTensor,
    VideoSpec,
    read_manifest,
)
from wam_export.exporter import ParityEpisode, WamModules, export_bundle
from wam_model.export import DecodeStage, EncodeStage
from wam_model.spec import BUNDLE_DIR, MODELS, ModelSpec, vocab

from .autoencoder import load_sim_autoencoder
from .nets import (
    ActContext,
    ActDenoise,
    ActPolicy,
    DzContext,
    DzDenoise,
    DzSpec,
    DzWam,
    count_params,
)
from .train import CHECKPOINT, load_checkpoint

DZ_DIR = MODELS / "wam_sim_dz"
ACT_DIR = MODELS / "wam_sim_act"
DZ16_DIR = MODELS / "wam_sim_dz_f16"
CHUNKS = 5
ACT_CHUNKS = 3
FIXTURE_DECIMALS = {"frames": 2, "frames_out": 4}
CHUNK_PERIOD_FRAMES = 6  # 0.4 s at 15 Hz
INSTRUCTION = "touch the red cube"


def sim_episode(
    spec: ModelSpec, chunks: int, seed: int = 7
) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float64]]]:
    """Per chunk: normalized frames [1, V, T, 3, H, W] (the T newest real frames) and the joint
    state at the newest one."""
    t = spec.context_frames
    try:
        from wam_sim.env import SimEnv
        from wam_sim.expert import expert_episode

        env = SimEnv((spec.image_size, spec.image_size))
        seconds = (chunks * CHUNK_PERIOD_FRAMES + t + 1) / spec.camera_rate_hz
        ep = expert_episode(env, seed=seed, instruction=INSTRUCTION, max_seconds=seconds)
        env.close()
        u8 = np.stack([ep.frames[c] for c in spec.cameras], axis=1)  # [N, V, H, W, 3]
        q = ep.qpos_at_frames
    except ImportError:  # no simulator: smooth synthetic frames
        n = chunks * CHUNK_PERIOD_FRAMES + t
        yy, xx = np.mgrid[0 : spec.image_size, 0 : spec.image_size] / spec.image_size
        u8 = np.stack(
            [
                np.stack(
                    [
                        np.stack(
                            [np.sin(6 * xx + 0.2 * k + v), np.cos(5 * yy - 0.1 * k), xx * yy], -1
                        )
                        for v in range(spec.num_cameras)
                    ]
                )
                for k in range(n)
            ]
        )
        u8 = ((u8 * 0.5 + 0.5) * 255).astype(np.uint8)
        q = np.tile(np.linspace(-0.2, 0.2, spec.state_dim), (n, 1)) * np.linspace(0, 1, n)[:, None]
    frames, states = [], []
    for k in range(chunks):
        last = t - 1 + k * CHUNK_PERIOD_FRAMES
        win = u8[last - t + 1 : last + 1].astype(np.float32) / 255.0  # [T, V, H, W, 3]
        x = (win.transpose(1, 0, 4, 2, 3) - 0.5) / 0.5  # [V, T, 3, H, W]
        frames.append(x[None].astype(np.float32))
        states.append(np.asarray(q[last], np.float64))
    return frames, states


def base_spec(model_id: str, sim: BundleSpec, dz: DzSpec, video_frames: int) -> BundleSpec:
    spec = ModelSpec()
    return BundleSpec(
        model_id=model_id,
        cameras=tuple(Camera(c, spec.image_size, spec.image_size) for c in spec.cameras),
        context_frames=spec.context_frames,
        state=sim.state,
        action=ActionSpec(
            joints=spec.joints,
            horizon=dz.horizon,
            dt=spec.action_dt,
            mean=sim.action.mean,
            std=sim.action.std,
        ),
        video=VideoSpec(
            video_frames,
            (spec.latent_channels, spec.latent_size, spec.latent_size),
            spec.video_dt if video_frames > 1 else dz.horizon * spec.action_dt,
        ),
        sampler=SamplerSpec(steps=1),
        instruction=Instruction(tuple(vocab()), spec.max_tokens),
        context_outputs=(),
        image=sim.image,
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out-dz", type=Path, default=DZ_DIR)
    ap.add_argument("--out-act", type=Path, default=ACT_DIR)
    ap.add_argument("--out-dz16", type=Path, default=DZ16_DIR)
    ap.add_argument("--float16", action="store_true", help="the WAM alone, float16 stages")
    ap.add_argument(
        "--node", type=Path, default=None, help="wam_policy_node for `check` (or $WAM_NODE)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="wam_dz.train's checkpoint")
    ap.add_argument("--untrained", action="store_true", help="seeded random weights")
    a = ap.parse_args()
    if not a.untrained and not a.checkpoint.exists():
        raise SystemExit(f"{a.checkpoint} missing: run python -m wam_dz.train (or --untrained)")
    torch.set_num_threads(2)
    sim = read_manifest(BUNDLE_DIR)  # the trained bundle's normalization: same data, same numbers
    ae = load_sim_autoencoder()
    dz = DzSpec(vocab_size=len(vocab()))
    frames, states = sim_episode(ModelSpec(), CHUNKS)
    episode = ParityEpisode(INSTRUCTION, list(frames), states)
    trained = None if a.untrained else load_checkpoint(a.checkpoint)
    header = [
        "Generated by `python -m wam_dz.export` (models/wam_dz, "
        + (
            "seeded random init: untrained"
            if trained is None
            else "trained by `python -m wam_dz.train`, models/README.md"
        )
        + "); do not edit.",
    ]
    version = "v0" if trained is None else "v1"
    summary = {}

    # --- DreamZero-style WAM ---------------------------------------------------------------------
    torch.manual_seed(a.seed)
    wam = (DzWam(dz) if trained is None else trained[0]).eval()
    spec = replace(
        base_spec(f"wam_sim_dz_{version}", sim, dz, dz.video_frames),
        sampler=SamplerSpec(
            steps=8,
            solver="unipc",
            shift=5.0,
            order=2,
            guidance=Guidance(3.0, ("video",)),
            reuse=(3, 5),
        ),
        context_outputs=("present_k", "present_v", "cond", "kv_bias"),
        context_state=ContextState(
            tensors=(
                StateTensor("past_k", "present_k", dz.cache_shape),
                StateTensor("past_v", "present_v", dz.cache_shape),
            ),
            axis=3,
            block=dz.block,
            length="past_length",
            position="chunk_index",
        ),
    )
    mods = WamModules(EncodeStage(ae), DzContext(wam), DzDenoise(wam), DecodeStage(ae))
    if a.float16:
        spec = replace(spec, model_id=f"{spec.model_id}_f16", dtype="float16")
    rep = export_bundle(
        mods,
        spec,
        a.out_dz16 if a.float16 else a.out_dz,
        [episode],
        seed=a.seed,
        header=header,
        node=a.node,
        fixture_decimals=FIXTURE_DECIMALS,
    )
    summary["wam_sim_dz_f16" if a.float16 else "wam_sim_dz"] = _summary(
        rep.to_json(), count_params(wam)
    )
    if a.float16:
        print(json.dumps(summary, indent=1))
        return

    # --- ACT-like deterministic chunking policy (solver none) -----------------------------------
    torch.manual_seed(a.seed + 1)
    pol = (ActPolicy(dz) if trained is None else trained[1]).eval()
    act_spec = replace(
        base_spec(f"wam_sim_act_{version}", sim, dz, 1),
        sampler=SamplerSpec(steps=1, solver="none"),
        context_outputs=("memory", "last_latents"),
        decode=False,
    )
    mods = WamModules(EncodeStage(ae), ActContext(pol), ActDenoise(pol), None)
    act_episode = ParityEpisode(INSTRUCTION, list(frames[:ACT_CHUNKS]), states[:ACT_CHUNKS])
    rep = export_bundle(
        mods,
        act_spec,
        a.out_act,
        [act_episode],
        seed=a.seed,
        header=header,
        node=a.node,
        fixture_decimals=FIXTURE_DECIMALS,
    )
    summary["wam_sim_act"] = _summary(rep.to_json(), count_params(pol))
    print(json.dumps(summary, indent=1))


def _summary(report: dict[str, object], params: int) -> dict[str, object]:
    per_chunk = report["parity_per_chunk"]
    assert isinstance(per_chunk, dict)
    return {
        "params (without the autoencoder)": params,
        "format_version": report["format_version"],
        "actions max abs per chunk": [c["actions"] for s in per_chunk.values() for c in s],
        "parity_max_abs": report["parity_max_abs"],
        "node_check": report["node_check"],
    }


if __name__ == "__main__":
    main()
