//! `~/planned_path` for rviz: the end-effector path of the active plan (forward kinematics of the
//! URDF, in its root frame) as a LINE_STRIP, and the node's state as a text marker above it.

use r2r::geometry_msgs::msg::{Point, Pose, Vector3};
use r2r::std_msgs::msg::ColorRGBA;
use r2r::visualization_msgs::msg::{Marker, MarkerArray};

use crate::controller::Controller;
use crate::kinematics::KinematicChain;

use super::messages::time_msg;

pub type MarkerArrayMsg = MarkerArray;

pub struct PlannedPath {
    chain: KinematicChain,
    msg: MarkerArray,
}

impl PlannedPath {
    /// The chain of the action joints in `urdf` (to `tip_link`, or the chain's own tip).
    pub fn new(
        urdf: &str,
        action_joints: &[String],
        tip_link: Option<&str>,
    ) -> Result<Self, crate::kinematics::KinematicsError> {
        let chain = KinematicChain::from_urdf(urdf, action_joints, tip_link)?;
        let frame = chain.root_link().to_string();
        let marker = |id: i32, type_: i32, scale: f64, color: [f32; 4]| Marker {
            header: r2r::std_msgs::msg::Header {
                frame_id: frame.clone(),
                ..Default::default()
            },
            ns: "wam_policy".into(),
            id,
            type_,
            action: Marker::ADD as i32,
            pose: Pose {
                orientation: r2r::geometry_msgs::msg::Quaternion {
                    w: 1.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            scale: Vector3 {
                x: scale,
                y: scale,
                z: scale,
            },
            color: ColorRGBA {
                r: color[0],
                g: color[1],
                b: color[2],
                a: color[3],
            },
            frame_locked: false,
            ..Default::default()
        };
        let msg = MarkerArray {
            markers: vec![
                marker(0, Marker::LINE_STRIP as i32, 0.005, [0.1, 0.8, 0.2, 1.0]),
                marker(
                    1,
                    Marker::TEXT_VIEW_FACING as i32,
                    0.04,
                    [1.0, 1.0, 1.0, 1.0],
                ),
            ],
        };
        tracing::info!(
            root = chain.root_link(),
            tip = chain.tip_link(),
            "planned end-effector path on ~/planned_path"
        );
        Ok(PlannedPath { chain, msg })
    }

    /// The markers of the controller's plan now (`stamp`) with `state` as text.
    pub fn update(&mut self, controller: &Controller, stamp: f64, state: &str) -> &MarkerArray {
        let plan = controller.plan();
        let [path, text] = &mut self.msg.markers[..] else {
            return &self.msg;
        };
        path.header.stamp = time_msg(stamp);
        text.header.stamp = time_msg(stamp);
        path.points.clear();
        for k in 0..plan.len() {
            let p = self.chain.forward(plan.position(k)).translation.vector;
            path.points.push(Point {
                x: p.x,
                y: p.y,
                z: p.z,
            });
        }
        // The text floats above the path's end (or the base while there is no plan).
        let end = path.points.last().cloned().unwrap_or_default();
        text.pose.position = Point {
            x: end.x,
            y: end.y,
            z: end.z + 0.1,
        };
        text.text.clear();
        text.text.push_str(state);
        &self.msg
    }
}
