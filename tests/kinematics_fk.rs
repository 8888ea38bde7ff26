//! `KinematicChain::forward` on the simulator's URDF against MuJoCo's own kinematics: the fixture
//! tests/fixtures/sim_arm_fk.json is written by `python -m wam_sim.urdf --fixture ...` (and checked current by
//! tests/test_sim_world.py), with the tip pose as `mj_kinematics` computes it for seeded joint vectors.

use nalgebra::{Quaternion, UnitQuaternion, Vector3};
use serde_json::Value;
use wam_policy::kinematics::KinematicChain;

const TOLERANCE: f64 = 1e-6;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sim_arm_fk.json"
    );
    let text = std::fs::read_to_string(path).expect("read the FK fixture");
    serde_json::from_str(&text).expect("parse the FK fixture")
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

/// Checks `chain.forward` against every case (q, position, quaternion_wxyz); returns the worst errors.
fn check_cases(chain: &KinematicChain, cases: &Value) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for (i, case) in cases.as_array().expect("cases").iter().enumerate() {
        let q = numbers(&case["q"]);
        let p = numbers(&case["position"]);
        let w = numbers(&case["quaternion_wxyz"]);
        let pose = chain.forward(&q);
        let position_error = (pose.translation.vector - Vector3::new(p[0], p[1], p[2])).norm();
        let expected = UnitQuaternion::from_quaternion(Quaternion::new(w[0], w[1], w[2], w[3]));
        // q and -q are one rotation: compare with whichever sign is nearer.
        let (a, b) = (pose.rotation.coords, expected.coords);
        let quaternion_error = (a - b).norm().min((a + b).norm());
        assert!(
            position_error < TOLERANCE && quaternion_error < TOLERANCE,
            "{}, case {i}, q {q:?}: position {:?} vs MuJoCo {p:?} ({position_error:e} m), rotation {:?} vs \
             {w:?} ({quaternion_error:e})",
            chain.tip_link(),
            pose.translation.vector.as_slice(),
            pose.rotation.coords.as_slice(),
        );
        worst = (worst.0.max(position_error), worst.1.max(quaternion_error));
    }
    worst
}

#[test]
fn forward_kinematics_matches_mujoco_on_the_sim_arm() {
    let f = fixture();
    let urdf = f["urdf"].as_str().expect("urdf");
    let joint_names = strings(&f["joint_names"]);
    let tip = f["tip_link"].as_str().expect("tip_link");
    let chain = KinematicChain::from_urdf(urdf, &joint_names, Some(tip)).expect("chain");
    assert_eq!(
        chain.root_link(),
        f["root_link"].as_str().expect("root_link")
    );
    assert_eq!(chain.tip_link(), tip);
    // The gripper opening moves the fingers, not the tip.
    assert_eq!(chain.ignored_joints(), ["gripper".to_string()]);
    assert_eq!(chain.chain_joints(), &joint_names[..6]);
    let n = f["cases"].as_array().expect("cases").len();
    assert!(n >= 20, "{n} cases");
    let (p, r) = check_cases(&chain, &f["cases"]);
    println!("{tip}: {n} cases, worst position error {p:e} m, quaternion error {r:e}");
}

#[test]
fn camera_links_match_mujoco_cameras() {
    // The exterior camera is turned about two axes: a wrong rpy convention shows here.
    let f = fixture();
    let urdf = f["urdf"].as_str().expect("urdf");
    let joint_names = strings(&f["joint_names"]);
    let cameras = f["camera_links"].as_array().expect("camera_links");
    assert_eq!(cameras.len(), 2);
    for camera in cameras {
        let tip = camera["tip_link"].as_str().expect("tip_link");
        let chain = KinematicChain::from_urdf(urdf, &joint_names, Some(tip)).expect("chain");
        let (p, r) = check_cases(&chain, &camera["cases"]);
        println!("{tip}: worst position error {p:e} m, quaternion error {r:e}");
    }
}

#[test]
fn without_a_tip_the_chain_ends_at_the_deepest_named_joint() {
    // The sim's gripper joint hangs under the hand, so by default the chain runs to its frame-only link:
    // callers that want the end effector name the tip.
    let f = fixture();
    let urdf = f["urdf"].as_str().expect("urdf");
    let joint_names = strings(&f["joint_names"]);
    let chain = KinematicChain::from_urdf(urdf, &joint_names, None).expect("chain");
    assert_eq!(chain.tip_link(), "gripper_opening");
    let arm = &joint_names[..6];
    let chain = KinematicChain::from_urdf(urdf, arm, None).expect("chain");
    assert_eq!(chain.tip_link(), "link6");
}
