"""wam_model: a small World Action Model trained on the simulator's scripted expert.

Stages: dataset (expert episodes -> samples), nets (image autoencoder, the WAM transformer that denoises
future video latents and the action chunk together, the action-only baseline), flow (flow matching with
the Rust sampler's convention), train, export (ONNX bundle + parity fixtures), evaluate (offline numbers).
"""

__all__ = ["spec"]
