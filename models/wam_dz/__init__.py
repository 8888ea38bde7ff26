"""A tiny DreamZero-style World Action Model (KV cache across chunks, CFG on video, UniPC shift 5,
step reuse) and an ACT-like chunking policy for the simulator's interface, exported with wam_export
(`python -m wam_dz.export`: models/wam_sim_dz and models/wam_sim_act)."""
