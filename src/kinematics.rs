//! Forward kinematics of one serial chain of a URDF: the pose of a tip link in the tree's root link frame,
//! for drawing the planned end-effector path (`~/planned_path`). Plain nalgebra, no KDL.
//!
//! The chain is reduced at construction to one constant transform per moving joint (fixed joints folded into
//! the next origin) and a constant tail, so `forward` is a short loop of isometry products with no allocation.

use std::collections::{HashMap, VecDeque};

use nalgebra::{Isometry3, Translation3, Unit, UnitQuaternion, Vector3};

use crate::urdf::{self, JointType, UrdfError};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KinematicsError {
    #[error("robot description {0}")]
    Urdf(#[from] UrdfError),
    #[error("robot description has no <link>")]
    NoLinks,
    #[error("joint `{joint}`: {end} link `{link}` is not a <link> of the robot description")]
    UnknownLink {
        joint: String,
        end: &'static str,
        link: String,
    },
    #[error("link `{link}` is the child of two joints, `{first}` and `{second}`; expected one parent per link")]
    TwoParents {
        link: String,
        first: String,
        second: String,
    },
    #[error("robot description has {} root links (no joint's child): {}; expected one", .0.len(), .0.join(", "))]
    Roots(Vec<String>),
    #[error("robot description's joints form a cycle through link `{0}`; expected a tree")]
    Cycle(String),
    #[error("tip link `{0}` is not a <link> of the robot description")]
    UnknownTipLink(String),
    #[error("joint `{0}` of joint_names is not a <joint> of the robot description")]
    JointNotFound(String),
    #[error("joint_names is empty and no tip link was given: nothing says where the chain ends")]
    NoTip,
    #[error("joint `{joint}` on the chain from `{root}` to `{tip}` is {joint_type}; expected revolute, continuous, prismatic or fixed")]
    UnsupportedJoint {
        joint: String,
        joint_type: &'static str,
        root: String,
        tip: String,
    },
    #[error("joint `{joint}` on the chain from `{root}` to `{tip}` moves ({joint_type}) but is not in joint_names and mimics none of them")]
    UnnamedJoint {
        joint: String,
        joint_type: &'static str,
        root: String,
        tip: String,
    },
    #[error("joint `{0}`: <axis xyz> is zero; expected a direction")]
    ZeroAxis(String),
}

#[derive(Debug, Clone, Copy)]
enum Motion {
    Revolute,
    Prismatic,
}

/// One moving joint: the constant transform before it (fixed joints above it folded in), then its motion.
#[derive(Debug, Clone)]
struct Step {
    origin: Isometry3<f64>,
    motion: Motion,
    axis: Unit<Vector3<f64>>,
    /// Index into the caller's joint vector; `multiplier`/`offset` are 1/0 unless the joint mimics another.
    index: usize,
    multiplier: f64,
    offset: f64,
}

/// The serial chain from the URDF's root link to a tip link.
#[derive(Debug, Clone)]
pub struct KinematicChain {
    root: String,
    tip: String,
    steps: Vec<Step>,
    tail: Isometry3<f64>,
    chain_joints: Vec<String>,
    ignored: Vec<String>,
    joint_count: usize,
}

/// URDF `rpy`: fixed-axis roll, pitch, yaw, i.e. R = Rz(yaw) Ry(pitch) Rx(roll).
fn origin(xyz: [f64; 3], rpy: [f64; 3]) -> Isometry3<f64> {
    let rotation = UnitQuaternion::from_axis_angle(&Vector3::z_axis(), rpy[2])
        * UnitQuaternion::from_axis_angle(&Vector3::y_axis(), rpy[1])
        * UnitQuaternion::from_axis_angle(&Vector3::x_axis(), rpy[0]);
    Isometry3::from_parts(Translation3::new(xyz[0], xyz[1], xyz[2]), rotation)
}

impl KinematicChain {
    /// The chain of `urdf` from its root link to `tip_link`. `joint_names` is the caller's joint vector (the
    /// one `forward` is given); each must be a joint of the URDF. Without `tip_link` the chain ends at the
    /// child link of the named joint with the most named joints above it (itself included); when several tie
    /// (e.g. two finger joints under a hand), at the deepest link above all of them. Named joints off the
    /// chain are ignored (`ignored_joints`); a moving joint on the chain must be named or mimic a named one.
    pub fn from_urdf(
        urdf: &str,
        joint_names: &[String],
        tip_link: Option<&str>,
    ) -> Result<KinematicChain, KinematicsError> {
        let tree = urdf::kinematic_tree(urdf)?;
        if tree.links.is_empty() {
            return Err(KinematicsError::NoLinks);
        }
        let link_index: HashMap<&str, usize> = tree
            .links
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i))
            .collect();
        let joint_index: HashMap<&str, usize> = tree
            .joints
            .iter()
            .enumerate()
            .map(|(i, j)| (j.name.as_str(), i))
            .collect();

        // Parent joint of every link, and child joints of every link.
        let mut parent_joint: Vec<Option<usize>> = vec![None; tree.links.len()];
        let mut child_joints: Vec<Vec<usize>> = vec![Vec::new(); tree.links.len()];
        let mut ends: Vec<(usize, usize)> = Vec::with_capacity(tree.joints.len());
        for (ji, joint) in tree.joints.iter().enumerate() {
            let find = |end: &'static str, link: &str| {
                link_index
                    .get(link)
                    .copied()
                    .ok_or_else(|| KinematicsError::UnknownLink {
                        joint: joint.name.clone(),
                        end,
                        link: link.into(),
                    })
            };
            let parent = find("parent", &joint.parent)?;
            let child = find("child", &joint.child)?;
            if let Some(first) = parent_joint[child] {
                return Err(KinematicsError::TwoParents {
                    link: joint.child.clone(),
                    first: tree.joints[first].name.clone(),
                    second: joint.name.clone(),
                });
            }
            parent_joint[child] = Some(ji);
            child_joints[parent].push(ji);
            ends.push((parent, child));
        }
        let roots: Vec<usize> = (0..tree.links.len())
            .filter(|&l| parent_joint[l].is_none())
            .collect();
        let root = match roots.as_slice() {
            [] => return Err(KinematicsError::Cycle(tree.links[0].clone())),
            [root] => *root,
            _ => {
                return Err(KinematicsError::Roots(
                    roots.iter().map(|&l| tree.links[l].clone()).collect(),
                ))
            }
        };

        // Caller's index of each URDF joint (first occurrence wins).
        let mut caller_index: Vec<Option<usize>> = vec![None; tree.joints.len()];
        for (i, name) in joint_names.iter().enumerate() {
            let ji = *joint_index
                .get(name.as_str())
                .ok_or_else(|| KinematicsError::JointNotFound(name.clone()))?;
            caller_index[ji].get_or_insert(i);
        }

        // Breadth-first from the root: depth and named joints above every link. A link left unvisited has
        // one parent but no path to the root: it lies on a cycle.
        let mut depth = vec![usize::MAX; tree.links.len()];
        let mut named_above = vec![0usize; tree.links.len()];
        depth[root] = 0;
        let mut queue = VecDeque::from([root]);
        while let Some(link) = queue.pop_front() {
            for &ji in &child_joints[link] {
                let child = ends[ji].1;
                depth[child] = depth[link] + 1;
                named_above[child] = named_above[link] + usize::from(caller_index[ji].is_some());
                queue.push_back(child);
            }
        }
        if let Some(l) = depth.iter().position(|&d| d == usize::MAX) {
            return Err(KinematicsError::Cycle(tree.links[l].clone()));
        }
        let parent_link = |l: usize| parent_joint[l].map(|ji| ends[ji].0);

        let tip = match tip_link {
            Some(name) => *link_index
                .get(name)
                .ok_or_else(|| KinematicsError::UnknownTipLink(name.into()))?,
            None => {
                let ends_of_named = caller_index
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.is_some())
                    .map(|(ji, _)| ends[ji].1);
                let most = ends_of_named
                    .clone()
                    .map(|l| named_above[l])
                    .max()
                    .ok_or(KinematicsError::NoTip)?;
                // The deepest common ancestor of the tied links: walk the deeper one up until they meet.
                let mut tied = ends_of_named.filter(|&l| named_above[l] == most);
                let mut tip = tied.next().ok_or(KinematicsError::NoTip)?;
                for mut other in tied {
                    while tip != other {
                        let deeper = if depth[tip] >= depth[other] {
                            &mut tip
                        } else {
                            &mut other
                        };
                        *deeper = parent_link(*deeper).unwrap_or(root);
                    }
                }
                tip
            }
        };

        let mut path = Vec::with_capacity(depth[tip]);
        let mut link = tip;
        while let Some(ji) = parent_joint[link] {
            path.push(ji);
            link = ends[ji].0;
        }
        path.reverse();

        let (root_name, tip_name) = (&tree.links[root], &tree.links[tip]);
        let mut steps = Vec::with_capacity(path.len());
        let mut chain_joints = Vec::with_capacity(path.len());
        let mut pending = Isometry3::identity();
        for &ji in &path {
            let joint = &tree.joints[ji];
            pending *= origin(joint.origin_xyz, joint.origin_rpy);
            let motion = match joint.joint_type {
                JointType::Fixed => continue,
                JointType::Revolute | JointType::Continuous => Motion::Revolute,
                JointType::Prismatic => Motion::Prismatic,
                JointType::Floating | JointType::Planar => {
                    return Err(KinematicsError::UnsupportedJoint {
                        joint: joint.name.clone(),
                        joint_type: joint.joint_type.as_str(),
                        root: root_name.clone(),
                        tip: tip_name.clone(),
                    })
                }
            };
            let mimicked = joint.mimic.as_ref().and_then(|m| {
                let index = joint_index
                    .get(m.joint.as_str())
                    .and_then(|&mj| caller_index[mj])?;
                Some((index, m.multiplier, m.offset))
            });
            let (index, multiplier, offset) = caller_index[ji]
                .map(|i| (i, 1.0, 0.0))
                .or(mimicked)
                .ok_or_else(|| KinematicsError::UnnamedJoint {
                    joint: joint.name.clone(),
                    joint_type: joint.joint_type.as_str(),
                    root: root_name.clone(),
                    tip: tip_name.clone(),
                })?;
            let [x, y, z] = joint.axis;
            let axis = Unit::try_new(Vector3::new(x, y, z), 1e-12)
                .ok_or_else(|| KinematicsError::ZeroAxis(joint.name.clone()))?;
            steps.push(Step {
                origin: pending,
                motion,
                axis,
                index,
                multiplier,
                offset,
            });
            chain_joints.push(joint.name.clone());
            pending = Isometry3::identity();
        }

        let mut ignored: Vec<String> = Vec::new();
        for name in joint_names {
            let on_chain = joint_index
                .get(name.as_str())
                .is_some_and(|ji| path.contains(ji));
            if !on_chain && !ignored.contains(name) {
                ignored.push(name.clone());
            }
        }
        Ok(KinematicChain {
            root: root_name.clone(),
            tip: tip_name.clone(),
            steps,
            tail: pending,
            chain_joints,
            ignored,
            joint_count: joint_names.len(),
        })
    }

    /// Pose of the tip link in the root link frame. `q` is indexed like the `joint_names` given to
    /// `from_urdf` (the full joint vector; joints off the chain are not read). It should hold
    /// `joint_count()` values; a missing one counts as 0 rather than panicking in the node's loop.
    pub fn forward(&self, q: &[f64]) -> Isometry3<f64> {
        let mut pose = Isometry3::identity();
        for step in &self.steps {
            let value = step.multiplier * q.get(step.index).copied().unwrap_or(0.0) + step.offset;
            pose *= step.origin;
            match step.motion {
                Motion::Revolute => pose *= UnitQuaternion::from_axis_angle(&step.axis, value),
                Motion::Prismatic => pose *= Translation3::from(step.axis.into_inner() * value),
            }
        }
        pose * self.tail
    }

    pub fn root_link(&self) -> &str {
        &self.root
    }

    pub fn tip_link(&self) -> &str {
        &self.tip
    }

    /// The moving joints of the chain, root to tip (mimic joints under their own names).
    pub fn chain_joints(&self) -> &[String] {
        &self.chain_joints
    }

    /// Joints of `joint_names` that are not on the chain (e.g. gripper fingers), in `joint_names` order.
    pub fn ignored_joints(&self) -> &[String] {
        &self.ignored
    }

    /// Length of the `joint_names` the chain was built for: what `forward` expects of `q`.
    pub fn joint_count(&self) -> usize {
        self.joint_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Matrix3, Point3};
    use std::f64::consts::FRAC_PI_2;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    fn assert_pose(p: &Isometry3<f64>, xyz: [f64; 3], r: Matrix3<f64>) {
        let t = p.translation.vector;
        assert!(
            (t - Vector3::from(xyz)).norm() < 1e-12,
            "position {t:?}, expected {xyz:?}"
        );
        let m = p.rotation.to_rotation_matrix().into_inner();
        assert!((m - r).norm() < 1e-12, "rotation {m}, expected {r}");
    }

    fn rz(a: f64) -> Matrix3<f64> {
        let (s, c) = a.sin_cos();
        Matrix3::new(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    }
    fn ry(a: f64) -> Matrix3<f64> {
        let (s, c) = a.sin_cos();
        Matrix3::new(c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c)
    }
    fn rx(a: f64) -> Matrix3<f64> {
        let (s, c) = a.sin_cos();
        Matrix3::new(1.0, 0.0, 0.0, 0.0, c, -s, 0.0, s, c)
    }

    /// A planar arm in the xy plane: links of 1 m and 0.5 m (to a fixed tool frame), both joints about z.
    const PLANAR: &str = r#"<?xml version="1.0"?>
<robot name="planar">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="tool"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/><axis xyz="0 0 1"/>
    <limit lower="-3" upper="3" velocity="1"/></joint>
  <joint name="j2" type="continuous"><parent link="l1"/><child link="l2"/>
    <origin xyz="1 0 0"/><axis xyz="0 0 1"/></joint>
  <joint name="tool_joint" type="fixed"><parent link="l2"/><child link="tool"/>
    <origin xyz="0.5 0 0"/></joint>
</robot>"#;

    #[test]
    fn planar_two_link_arm() {
        let chain = KinematicChain::from_urdf(PLANAR, &names(&["j1", "j2"]), Some("tool")).unwrap();
        assert_eq!((chain.root_link(), chain.tip_link()), ("base", "tool"));
        assert_eq!(chain.chain_joints(), names(&["j1", "j2"]));
        assert_pose(
            &chain.forward(&[0.0, 0.0]),
            [1.5, 0.0, 0.0],
            Matrix3::identity(),
        );
        // Elbow up then back: the tool points along x again, one metre up the y axis.
        assert_pose(
            &chain.forward(&[FRAC_PI_2, -FRAC_PI_2]),
            [0.5, 1.0, 0.0],
            Matrix3::identity(),
        );
        assert_pose(
            &chain.forward(&[FRAC_PI_2, FRAC_PI_2]),
            [-0.5, 1.0, 0.0],
            rz(std::f64::consts::PI),
        );
        let (a, b) = (0.3, -1.1);
        assert_pose(
            &chain.forward(&[a, b]),
            [
                a.cos() + 0.5 * (a + b).cos(),
                a.sin() + 0.5 * (a + b).sin(),
                0.0,
            ],
            rz(a + b),
        );
        // Without a tip: the child of the deepest named joint, so the fixed tool offset is left out.
        let chain = KinematicChain::from_urdf(PLANAR, &names(&["j1", "j2"]), None).unwrap();
        assert_eq!(chain.tip_link(), "l2");
        assert_pose(
            &chain.forward(&[0.0, 0.0]),
            [1.0, 0.0, 0.0],
            Matrix3::identity(),
        );
    }

    #[test]
    fn q_is_indexed_like_joint_names() {
        // Joints in another order than the chain's: each is read at its index in joint_names.
        let chain = KinematicChain::from_urdf(PLANAR, &names(&["j2", "j1"]), Some("tool")).unwrap();
        let p = chain.forward(&[0.0, FRAC_PI_2]);
        assert_pose(&p, [0.0, 1.5, 0.0], rz(FRAC_PI_2));
        assert_eq!(chain.joint_count(), 2);
    }

    #[test]
    fn rpy_is_fixed_axis_roll_pitch_yaw() {
        // A fixed joint with origin rpy, then a revolute joint about x in the rotated frame: R = Rz Ry Rx.
        let (r, p, y) = (0.3, -0.4, 1.1);
        let urdf = format!(
            r#"<robot name="r"><link name="a"/><link name="b"/><link name="c"/>
  <joint name="f" type="fixed"><parent link="a"/><child link="b"/><origin xyz="0.1 0.2 0.3" rpy="{r} {p} {y}"/></joint>
  <joint name="j" type="revolute"><parent link="b"/><child link="c"/><origin xyz="0 0 1"/>
    <limit lower="-1" upper="1" velocity="1"/></joint>
</robot>"#
        );
        let chain = KinematicChain::from_urdf(&urdf, &names(&["j"]), None).unwrap();
        assert_eq!(chain.tip_link(), "c");
        let rb = rz(y) * ry(p) * rx(r);
        let pos = Vector3::new(0.1, 0.2, 0.3) + rb * Vector3::new(0.0, 0.0, 1.0);
        assert_pose(&chain.forward(&[0.0]), pos.into(), rb);
        // Default axis 1 0 0.
        assert_pose(&chain.forward(&[0.7]), pos.into(), rb * rx(0.7));

        // Quarter turns by hand: rpy (pi/2, 0, pi/2) takes the child's z to the parent's x and the child's
        // x to the parent's y (Rx then Rz); the other order would give -y and z.
        let urdf = r#"<robot name="r"><link name="a"/><link name="b"/>
  <joint name="f" type="fixed"><parent link="a"/><child link="b"/><origin rpy="1.5707963267948966 0 1.5707963267948966"/></joint>
</robot>"#;
        let chain = KinematicChain::from_urdf(urdf, &[], Some("b")).unwrap();
        let pose = chain.forward(&[]);
        let z = pose * Point3::new(0.0, 0.0, 1.0);
        let x = pose * Point3::new(1.0, 0.0, 0.0);
        assert!((z - Point3::new(1.0, 0.0, 0.0)).norm() < 1e-12, "{z}");
        assert!((x - Point3::new(0.0, 1.0, 0.0)).norm() < 1e-12, "{x}");
    }

    #[test]
    fn prismatic_joint_moves_along_its_normalized_axis() {
        let urdf = r#"<robot name="r"><link name="a"/><link name="b"/><link name="c"/>
  <joint name="slide" type="prismatic"><parent link="a"/><child link="b"/>
    <origin xyz="0 0 1" rpy="0 0 1.5707963267948966"/><axis xyz="0 0 2"/>
    <limit lower="0" upper="1" velocity="1"/></joint>
  <joint name="f" type="fixed"><parent link="b"/><child link="c"/><origin xyz="1 0 0"/></joint>
</robot>"#;
        let chain = KinematicChain::from_urdf(urdf, &names(&["slide"]), Some("c")).unwrap();
        assert_pose(&chain.forward(&[0.3]), [0.0, 1.0, 1.3], rz(FRAC_PI_2));
        // A slide along the rotated x axis goes along the parent's y.
        let urdf = urdf.replace("0 0 2", "1 0 0");
        let chain = KinematicChain::from_urdf(&urdf, &names(&["slide"]), Some("c")).unwrap();
        assert_pose(&chain.forward(&[0.3]), [0.0, 1.3, 1.0], rz(FRAC_PI_2));
    }

    /// Arm of two joints, a hand, two fingers, a side branch (a "head" joint off the base).
    const GRIPPER: &str = r#"<robot name="r">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="hand"/><link name="fl"/><link name="fr"/>
  <link name="head"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/><axis xyz="0 0 1"/></joint>
  <joint name="j2" type="revolute"><parent link="l1"/><child link="l2"/><origin xyz="0 0 1"/><axis xyz="0 1 0"/></joint>
  <joint name="hand_joint" type="fixed"><parent link="l2"/><child link="hand"/><origin xyz="0 0 0.5"/></joint>
  <joint name="finger_l" type="prismatic"><parent link="hand"/><child link="fl"/><axis xyz="0 1 0"/></joint>
  <joint name="finger_r" type="prismatic"><parent link="hand"/><child link="fr"/><axis xyz="0 -1 0"/>
    <mimic joint="finger_l" multiplier="2" offset="0.1"/></joint>
  <joint name="neck" type="revolute"><parent link="base"/><child link="head"/><axis xyz="0 0 1"/></joint>
</robot>"#;

    #[test]
    fn default_tip_stops_where_named_joints_branch() {
        let all = names(&["neck", "j1", "j2", "finger_l", "finger_r"]);
        let chain = KinematicChain::from_urdf(GRIPPER, &all, None).unwrap();
        assert_eq!(chain.tip_link(), "hand");
        assert_eq!(
            chain.ignored_joints(),
            names(&["neck", "finger_l", "finger_r"])
        );
        assert_pose(
            &chain.forward(&[9.0, 0.0, FRAC_PI_2, 9.0, 9.0]),
            [0.5, 0.0, 1.0],
            ry(FRAC_PI_2),
        );
        // One finger named: it is the deepest named joint.
        let chain =
            KinematicChain::from_urdf(GRIPPER, &names(&["j1", "j2", "finger_l"]), None).unwrap();
        assert_eq!(chain.tip_link(), "fl");
        assert!(chain.ignored_joints().is_empty());
        assert_pose(
            &chain.forward(&[FRAC_PI_2, 0.0, 0.25]),
            [-0.25, 0.0, 1.5],
            rz(FRAC_PI_2),
        );
        // The mimic finger follows its named joint: y = -(2 * 0.25 + 0.1).
        let chain =
            KinematicChain::from_urdf(GRIPPER, &names(&["j1", "j2", "finger_l"]), Some("fr"))
                .unwrap();
        assert_pose(
            &chain.forward(&[0.0, 0.0, 0.25]),
            [0.0, -0.6, 1.5],
            Matrix3::identity(),
        );
        assert_eq!(chain.chain_joints(), names(&["j1", "j2", "finger_r"]));
        assert_eq!(chain.joint_count(), 3);
        // A short q reads missing values as 0.
        assert_eq!(chain.forward(&[0.5]), chain.forward(&[0.5, 0.0, 0.0]));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = |urdf: &str, joints: &[&str], tip: Option<&str>| {
            KinematicChain::from_urdf(urdf, &names(joints), tip).unwrap_err()
        };
        assert_eq!(
            e(PLANAR, &["j1"], Some("gripper")),
            KinematicsError::UnknownTipLink("gripper".into())
        );
        assert_eq!(
            e(PLANAR, &["j1", "elbow"], None),
            KinematicsError::JointNotFound("elbow".into())
        );
        assert_eq!(e(PLANAR, &[], None), KinematicsError::NoTip);
        // j2 moves but the caller's vector has no value for it.
        let err = e(PLANAR, &["j1"], Some("tool"));
        assert!(matches!(err, KinematicsError::UnnamedJoint { ref joint, .. } if joint == "j2"));
        assert!(err.to_string().contains("`base` to `tool`"), "{err}");

        let two_parents = PLANAR.replace(
            r#"<parent link="l1"/><child link="l2"/>"#,
            r#"<parent link="tool"/><child link="tool"/>"#,
        );
        assert!(matches!(
            e(&two_parents, &["j1"], None),
            KinematicsError::TwoParents { ref link, .. } if link == "tool"
        ));
        let two_roots = r#"<robot><link name="a"/><link name="b"/><link name="c"/>
  <joint name="j" type="fixed"><parent link="a"/><child link="b"/></joint></robot>"#;
        assert_eq!(
            e(two_roots, &[], Some("b")),
            KinematicsError::Roots(names(&["a", "c"]))
        );
        // b -> c -> b beside the root a: every link has a parent but b and c do not reach a.
        let cycle = r#"<robot><link name="a"/><link name="b"/><link name="c"/>
  <joint name="j1" type="fixed"><parent link="b"/><child link="c"/></joint>
  <joint name="j2" type="fixed"><parent link="c"/><child link="b"/></joint></robot>"#;
        assert_eq!(e(cycle, &[], Some("a")), KinematicsError::Cycle("b".into()));
        let cycle = r#"<robot><link name="a"/><joint name="j" type="fixed"><parent link="a"/><child link="a"/></joint></robot>"#;
        assert_eq!(e(cycle, &[], Some("a")), KinematicsError::Cycle("a".into()));
        let unknown = r#"<robot><link name="a"/><joint name="j" type="fixed"><parent link="a"/><child link="x"/></joint></robot>"#;
        assert!(e(unknown, &[], Some("a"))
            .to_string()
            .contains("child link `x`"));
        assert_eq!(e("<robot/>", &[], None), KinematicsError::NoLinks);
        let zero = PLANAR.replace(
            r#"<origin xyz="1 0 0"/><axis xyz="0 0 1"/>"#,
            r#"<axis xyz="0 0 0"/>"#,
        );
        assert_eq!(
            e(&zero, &["j1", "j2"], None),
            KinematicsError::ZeroAxis("j2".into())
        );
        let bad = PLANAR.replace(r#"<origin xyz="0.5 0 0"/>"#, r#"<origin xyz="0.5 x 0"/>"#);
        let err = e(&bad, &["j1"], None).to_string();
        assert!(
            err.contains("tool_joint") && err.contains("origin xyz"),
            "{err}"
        );
        // A floating joint off the chain is fine; on it, refused.
        let floating = GRIPPER.replace(
            r#"name="neck" type="revolute""#,
            r#"name="neck" type="floating""#,
        );
        assert!(KinematicChain::from_urdf(&floating, &names(&["j1", "j2"]), None).is_ok());
        assert!(matches!(
            e(&floating, &["j1"], Some("head")),
            KinematicsError::UnsupportedJoint { ref joint, joint_type: "floating", .. } if joint == "neck"
        ));
    }

    #[test]
    fn hostile_descriptions_give_errors_not_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let sources = [
            (PLANAR, names(&["j1", "j2"])),
            (GRIPPER, names(&["j1", "j2", "finger_l", "neck"])),
        ];
        // Raw edits mostly break the XML; attribute values swapped for others keep it parseable and reach
        // the tree checks (cycles, unknown links, bad numbers, odd joint types).
        let pieces = [
            "<", ">", "\"", "/>", " ", "0", "nan", "link", "joint", "-", "1e3", "&amp;",
        ];
        let values = [
            "base",
            "l1",
            "l2",
            "hand",
            "tool",
            "head",
            "fl",
            "j1",
            "j2",
            "finger_l",
            "0 0 0",
            "0 0 1",
            "1 0",
            "nan 0 0",
            "1e300 0 0",
            "fixed",
            "prismatic",
            "floating",
            "planar",
            "",
        ];
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let (source, all) = &sources[rng.random_range(0..sources.len())];
            let mut text = source.to_string();
            for _ in 0..rng.random_range(1..4) {
                if rng.random_bool(0.7) {
                    let quotes: Vec<usize> = text.match_indices('"').map(|(i, _)| i).collect();
                    let k = rng.random_range(0..quotes.len() / 2) * 2;
                    let value = values[rng.random_range(0..values.len())];
                    text.replace_range(quotes[k] + 1..quotes[k + 1], value);
                    continue;
                }
                let mut at = rng.random_range(0..text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + rng.random_range(0..8)).min(text.len());
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.replace_range(at..end, pieces[rng.random_range(0..pieces.len())]);
            }
            let joints = &all[..rng.random_range(0..=all.len())];
            match KinematicChain::from_urdf(&text, joints, None) {
                Ok(chain) => {
                    accepted += 1;
                    let q: Vec<f64> = (0..joints.len())
                        .map(|_| rng.random_range(-3.0..3.0))
                        .collect();
                    // 1e300 origins may overflow to infinity; what matters is that nothing panics.
                    let _ = chain.forward(&q);
                    let _ = chain.forward(&[]);
                }
                Err(KinematicsError::Urdf(UrdfError::Xml(_))) => {}
                Err(_) => refused += 1,
            }
        }
        assert!(
            accepted > 100 && refused > 1000,
            "{accepted} mutated descriptions accepted, {refused} refused by the tree checks"
        );
    }
}
