"""The scripted expert solves every task family from randomized starts, smoothly."""

from __future__ import annotations

import numpy as np
import pytest

from wam_sim import CAMERA_NAMES, MAX_SECONDS, SimEnv, expert_episode, instructions

SEEDS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(image_size=(64, 64))


@pytest.mark.parametrize("instruction", instructions())
def test_expert_solves(env: SimEnv, instruction: str) -> None:
    for seed in SEEDS:
        ep = expert_episode(env, 1000 + seed, instruction, camera_rate_hz=0.0)
        assert ep.success, (instruction, seed, ep.info)
        assert ep.target_times[-1] <= MAX_SECONDS[ep.task_family]
        dq = np.diff(ep.targets[:, :6], axis=0) / 0.1
        assert np.abs(dq).max() <= 1.0  # rad/s, well below 2
        # The arm follows the setpoints closely.
        lag = np.abs(ep.qpos_at_targets[1:, :6] - ep.targets[:-1, :6]).max()
        assert lag < 0.1, lag


def test_episode_record(env: SimEnv) -> None:
    ep = expert_episode(env, 7, None, camera_rate_hz=15.0)
    assert ep.success and ep.seed == 7 and ep.instruction in instructions()
    n = len(ep.frame_times)
    assert n >= 15 and np.allclose(np.diff(ep.frame_times), 1 / 15, atol=0.002)
    for c in CAMERA_NAMES:
        assert ep.frames[c].shape == (n, 64, 64, 3) and ep.frames[c].dtype == np.uint8
    assert ep.qpos_at_frames.shape == (n, 7)
    m = len(ep.target_times)
    assert ep.targets.shape == ep.qpos_at_targets.shape == (m, 7)
    np.testing.assert_allclose(np.diff(ep.target_times), 0.1, atol=1e-9)
    again = expert_episode(env, 7, None, camera_rate_hz=15.0)
    np.testing.assert_array_equal(ep.targets, again.targets)
    np.testing.assert_array_equal(ep.frames["wrist"], again.frames["wrist"])


@pytest.mark.parametrize("instruction", ["touch the red cube", "push the blue cube to the yellow zone"])
def test_a_detour_heads_for_the_other_cube_then_solves_the_task(env: SimEnv, instruction: str) -> None:
    ep = expert_episode(env, 5, instruction, camera_rate_hz=0.0, detour=("green", 1.0))
    assert ep.success, ep.info
    assert ep.label_from_s == pytest.approx(1.0, abs=0.011)
    # During the detour the fingertip closes in on the green cube, not on the instructed one.
    env.reset(5, instruction)
    start_tip, green, asked = env.tip_position(), env.cube_position("green"), env.cube_position()
    plain = expert_episode(env, 5, instruction, camera_rate_hz=0.0)
    assert plain.label_from_s == 0.0
    env.reset(5, instruction)
    for target in ep.targets[ep.target_times < ep.label_from_s]:
        env.set_target(target)
        env.step(0.1)
    tip = env.tip_position()
    closer_green = np.linalg.norm(start_tip[:2] - green[:2]) - np.linalg.norm(tip[:2] - green[:2])
    closer_asked = np.linalg.norm(start_tip[:2] - asked[:2]) - np.linalg.norm(tip[:2] - asked[:2])
    assert closer_green > 0.05 and closer_green > closer_asked, (closer_green, closer_asked)
