//! Joint limits from a URDF (`robot_description`): `<joint name=...><limit lower upper velocity/></joint>`.
//! Continuous joints have no position limits; URDF carries no acceleration limits.
//! Also the kinematic tree (links, joints with their origins and axes) that `kinematics` builds chains from.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum UrdfError {
    #[error("is not valid XML: {0}")]
    Xml(String),
    #[error("has no <joint name=\"{0}\">")]
    MissingJoint(String),
    #[error("joint `{joint}` has no <limit {attribute}=...> (needed for the safety limits)")]
    MissingLimit { joint: String, attribute: String },
    #[error("joint `{joint}`: <limit {attribute}=\"{value}\"> is not a number")]
    BadNumber {
        joint: String,
        attribute: String,
        value: String,
    },
    #[error("<{element}> `{name}`: {attribute}=\"{value}\" is not {expected}")]
    BadAttribute {
        element: &'static str,
        name: String,
        attribute: String,
        value: String,
        expected: &'static str,
    },
    #[error("<{element}> `{name}` has no {what}")]
    Missing {
        element: &'static str,
        name: String,
        what: &'static str,
    },
    #[error("has two <{element} name=\"{name}\">")]
    Duplicate { element: &'static str, name: String },
    #[error("has more than {limit} <{element}> elements")]
    TooMany { element: &'static str, limit: usize },
}

/// Limits of the named joints, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct UrdfLimits {
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub max_velocity: Vec<f64>,
}

/// Element nesting a URDF may have: real ones nest a few levels; the XML parser recurses per level
/// and a deep enough document overflows the stack (found by fuzzing).
const MAX_URDF_NESTING: usize = 128;

/// The deepest element nesting of `xml`, counted in one pass without parsing it: quoted attribute
/// values, comments, CDATA and processing instructions are skipped, so a `>` inside them does not end
/// a tag.
fn nesting_depth(xml: &str) -> usize {
    let b = xml.as_bytes();
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    let skip_to = |from: usize, end: &[u8]| -> usize {
        b[from..]
            .windows(end.len())
            .position(|w| w == end)
            .map_or(b.len(), |p| from + p + end.len())
    };
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = skip_to(i + 4, b"-->");
            continue;
        }
        if rest.starts_with(b"<![CDATA[") {
            i = skip_to(i + 9, b"]]>");
            continue;
        }
        if rest.starts_with(b"<?") {
            i = skip_to(i + 2, b"?>");
            continue;
        }
        let closing = rest.get(1) == Some(&b'/');
        let declaration = rest.get(1) == Some(&b'!');
        // To the tag's end, outside quotes.
        let (mut j, mut quote, mut last) = (i + 1, None::<u8>, 0u8);
        while j < b.len() {
            let c = b[j];
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if c == b'>' => break,
                None if !c.is_ascii_whitespace() => last = c,
                None => {}
            }
            j += 1;
        }
        if closing {
            depth = depth.saturating_sub(1);
        } else if !declaration && last != b'/' {
            depth += 1;
            deepest = deepest.max(depth);
        }
        i = j + 1;
    }
    deepest
}

/// Parses `urdf` after the nesting check (the parser would overflow the stack first).
fn parse(urdf: &str) -> Result<roxmltree::Document<'_>, UrdfError> {
    if nesting_depth(urdf) > MAX_URDF_NESTING {
        return Err(UrdfError::Xml(format!(
            "elements nest deeper than {MAX_URDF_NESTING} levels"
        )));
    }
    roxmltree::Document::parse(urdf).map_err(|e| UrdfError::Xml(e.to_string()))
}

/// The robot's `<joint>`/`<link>` elements: children of the root element only, since `<transmission>` and
/// `<gazebo>` blocks hold `<joint name=...>` elements of their own that are references, not joints.
fn top_level<'a, 'input>(
    doc: &'a roxmltree::Document<'input>,
    tag: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'input>> + 'a {
    doc.root_element()
        .children()
        .filter(move |n| n.has_tag_name(tag))
}

pub fn joint_limits(urdf: &str, joint_names: &[String]) -> Result<UrdfLimits, UrdfError> {
    let doc = parse(urdf)?;
    let mut out = UrdfLimits {
        lower: Vec::with_capacity(joint_names.len()),
        upper: Vec::with_capacity(joint_names.len()),
        max_velocity: Vec::with_capacity(joint_names.len()),
    };
    for name in joint_names {
        let joint = top_level(&doc, "joint")
            .find(|n| n.attribute("name") == Some(name.as_str()))
            .ok_or_else(|| UrdfError::MissingJoint(name.clone()))?;
        let limit = joint.children().find(|n| n.has_tag_name("limit"));
        let number = |attribute: &str| -> Result<Option<f64>, UrdfError> {
            let Some(text) = limit.and_then(|l| l.attribute(attribute)) else {
                return Ok(None);
            };
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| UrdfError::BadNumber {
                    joint: name.clone(),
                    attribute: attribute.into(),
                    value: text.into(),
                })
        };
        let missing = |attribute: &str| UrdfError::MissingLimit {
            joint: name.clone(),
            attribute: attribute.into(),
        };
        let continuous = joint.attribute("type") == Some("continuous");
        let (lower, upper) = if continuous {
            (f64::NEG_INFINITY, f64::INFINITY)
        } else {
            (
                number("lower")?.ok_or_else(|| missing("lower"))?,
                number("upper")?.ok_or_else(|| missing("upper"))?,
            )
        };
        out.lower.push(lower);
        out.upper.push(upper);
        out.max_velocity
            .push(number("velocity")?.ok_or_else(|| missing("velocity"))?);
    }
    Ok(out)
}

/// How a joint moves its child link. `floating` and `planar` are parsed so that a URDF holding one off the
/// arm's chain still loads; a chain through one is refused by `kinematics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JointType {
    Revolute,
    Continuous,
    Prismatic,
    Fixed,
    Floating,
    Planar,
}

impl JointType {
    pub fn as_str(self) -> &'static str {
        match self {
            JointType::Revolute => "revolute",
            JointType::Continuous => "continuous",
            JointType::Prismatic => "prismatic",
            JointType::Fixed => "fixed",
            JointType::Floating => "floating",
            JointType::Planar => "planar",
        }
    }
}

/// `<mimic joint=... multiplier=... offset=...>`: position = multiplier * position(joint) + offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Mimic {
    pub joint: String,
    pub multiplier: f64,
    pub offset: f64,
}

/// One `<joint>` of the tree. `origin_*` place the joint (= child link) frame in the parent link frame;
/// `axis` is in the joint frame, as written (not normalized).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeJoint {
    pub name: String,
    pub joint_type: JointType,
    pub parent: String,
    pub child: String,
    pub origin_xyz: [f64; 3],
    pub origin_rpy: [f64; 3],
    pub axis: [f64; 3],
    pub mimic: Option<Mimic>,
}

/// The links and joints of a URDF, in document order, names unique.
#[derive(Debug, Clone, PartialEq)]
pub struct UrdfTree {
    pub links: Vec<String>,
    pub joints: Vec<TreeJoint>,
}

/// Links or joints a tree may have: far above any robot, low enough that a hostile description cannot make
/// the chain search (linear in the tree) or the name tables large.
pub const MAX_TREE_ELEMENTS: usize = 10_000;

/// A finite number from an attribute value (URDF numbers are plain decimals; NaN and infinities are refused).
fn finite(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A vector attribute of three finite numbers separated by whitespace (`xyz`, `rpy`, `axis xyz`).
fn triple(text: &str, joint: &str, attribute: &'static str) -> Result<[f64; 3], UrdfError> {
    let bad = || UrdfError::BadAttribute {
        element: "joint",
        name: joint.into(),
        attribute: attribute.into(),
        value: text.into(),
        expected: "three finite numbers",
    };
    let mut out = [0.0; 3];
    let mut parts = text.split_whitespace();
    for v in out.iter_mut() {
        *v = parts.next().and_then(finite).ok_or_else(bad)?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

/// The kinematic tree of `urdf`: every top-level `<link>` and `<joint>`. Defaults as URDF defines them: origin
/// zero, axis `1 0 0`, mimic multiplier 1 and offset 0. Whether the joints form one tree is checked by
/// `kinematics`, which names the chain it needs.
pub fn kinematic_tree(urdf: &str) -> Result<UrdfTree, UrdfError> {
    let doc = parse(urdf)?;
    let mut tree = UrdfTree {
        links: Vec::new(),
        joints: Vec::new(),
    };
    let mut link_names = std::collections::HashSet::new();
    for link in top_level(&doc, "link") {
        if tree.links.len() == MAX_TREE_ELEMENTS {
            return Err(UrdfError::TooMany {
                element: "link",
                limit: MAX_TREE_ELEMENTS,
            });
        }
        let name = link.attribute("name").ok_or(UrdfError::Missing {
            element: "link",
            name: String::new(),
            what: "name attribute",
        })?;
        if !link_names.insert(name) {
            return Err(UrdfError::Duplicate {
                element: "link",
                name: name.into(),
            });
        }
        tree.links.push(name.into());
    }
    let mut joint_names = std::collections::HashSet::new();
    for joint in top_level(&doc, "joint") {
        if tree.joints.len() == MAX_TREE_ELEMENTS {
            return Err(UrdfError::TooMany {
                element: "joint",
                limit: MAX_TREE_ELEMENTS,
            });
        }
        let parsed = tree_joint(joint)?;
        if !joint_names.insert(parsed.name.clone()) {
            return Err(UrdfError::Duplicate {
                element: "joint",
                name: parsed.name,
            });
        }
        tree.joints.push(parsed);
    }
    Ok(tree)
}

fn tree_joint(joint: roxmltree::Node<'_, '_>) -> Result<TreeJoint, UrdfError> {
    let name = joint.attribute("name").ok_or(UrdfError::Missing {
        element: "joint",
        name: String::new(),
        what: "name attribute",
    })?;
    let missing = |what: &'static str| UrdfError::Missing {
        element: "joint",
        name: name.into(),
        what,
    };
    let type_text = joint
        .attribute("type")
        .ok_or_else(|| missing("type attribute"))?;
    let joint_type = match type_text {
        "revolute" => JointType::Revolute,
        "continuous" => JointType::Continuous,
        "prismatic" => JointType::Prismatic,
        "fixed" => JointType::Fixed,
        "floating" => JointType::Floating,
        "planar" => JointType::Planar,
        other => {
            return Err(UrdfError::BadAttribute {
                element: "joint",
                name: name.into(),
                attribute: "type".into(),
                value: other.into(),
                expected: "revolute, continuous, prismatic, fixed, floating or planar",
            })
        }
    };
    let child_element = |tag: &str| joint.children().find(|n| n.has_tag_name(tag));
    let link_of = |tag: &'static str, what: &'static str| -> Result<String, UrdfError> {
        child_element(tag)
            .and_then(|n| n.attribute("link"))
            .map(String::from)
            .ok_or_else(|| missing(what))
    };
    let parent = link_of("parent", "<parent link=...>")?;
    let child = link_of("child", "<child link=...>")?;
    let origin = child_element("origin");
    let origin_xyz = match origin.and_then(|o| o.attribute("xyz")) {
        Some(text) => triple(text, name, "origin xyz")?,
        None => [0.0; 3],
    };
    let origin_rpy = match origin.and_then(|o| o.attribute("rpy")) {
        Some(text) => triple(text, name, "origin rpy")?,
        None => [0.0; 3],
    };
    let axis = match child_element("axis").and_then(|a| a.attribute("xyz")) {
        Some(text) => triple(text, name, "axis xyz")?,
        None => [1.0, 0.0, 0.0],
    };
    let mimic = match child_element("mimic") {
        None => None,
        Some(m) => {
            let number = |attribute: &'static str, default: f64| -> Result<f64, UrdfError> {
                match m.attribute(attribute) {
                    None => Ok(default),
                    Some(text) => finite(text).ok_or_else(|| UrdfError::BadAttribute {
                        element: "joint",
                        name: name.into(),
                        attribute: format!("mimic {attribute}"),
                        value: text.into(),
                        expected: "a finite number",
                    }),
                }
            };
            Some(Mimic {
                joint: m
                    .attribute("joint")
                    .ok_or_else(|| missing("<mimic joint=...>"))?
                    .into(),
                multiplier: number("multiplier", 1.0)?,
                offset: number("offset", 0.0)?,
            })
        }
    };
    Ok(TreeJoint {
        name: name.into(),
        joint_type,
        parent,
        child,
        origin_xyz,
        origin_rpy,
        axis,
        mimic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_past_quotes_comments_and_self_closing_tags() {
        assert_eq!(
            nesting_depth("<robot><joint name='a'><limit upper='1'/></joint></robot>"),
            2
        );
        assert_eq!(nesting_depth(&"<a x=\"/>\">".repeat(300)), 300);
        assert_eq!(nesting_depth("<a><!-- <b><c> --><d/></a>"), 1);
        assert_eq!(nesting_depth(&"<".repeat(100_000)), 1);
        let deep = format!("{}{}", "<robot>".repeat(1000), "</robot>".repeat(1000));
        assert!(joint_limits(&deep, &[]).is_err());
    }

    const URDF: &str = r#"<?xml version="1.0"?>
<robot name="arm">
  <link name="base"/><link name="l1"/><link name="l2"/>
  <joint name="shoulder" type="revolute">
    <parent link="base"/><child link="l1"/>
    <limit lower="-1.5" upper="1.25" velocity="2.0" effort="10"/>
  </joint>
  <joint name="wrist" type="continuous">
    <parent link="l1"/><child link="l2"/>
    <limit velocity="3.0" effort="5"/>
  </joint>
  <joint name="broken" type="revolute"><limit lower="x" upper="1" velocity="1"/></joint>
  <joint name="nolimit" type="revolute"/>
</robot>"#;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_limits_in_the_requested_order() {
        let l = joint_limits(URDF, &names(&["wrist", "shoulder"])).unwrap();
        assert_eq!(l.upper[1], 1.25);
        assert_eq!(l.lower[1], -1.5);
        assert_eq!(l.max_velocity, vec![3.0, 2.0]);
        assert!(l.lower[0].is_infinite() && l.upper[0].is_infinite());
    }

    #[test]
    fn errors_name_the_joint_and_attribute() {
        assert_eq!(
            joint_limits(URDF, &names(&["elbow"])),
            Err(UrdfError::MissingJoint("elbow".into()))
        );
        let e = joint_limits(URDF, &names(&["broken"])).unwrap_err();
        assert!(e.to_string().contains("broken") && e.to_string().contains("lower"));
        let e = joint_limits(URDF, &names(&["nolimit"])).unwrap_err();
        assert!(matches!(e, UrdfError::MissingLimit { .. }));
        assert!(matches!(
            joint_limits("<robot", &names(&["a"])),
            Err(UrdfError::Xml(_))
        ));
    }

    #[test]
    fn joints_inside_transmissions_are_not_joints() {
        let urdf = r#"<robot name="r">
  <transmission name="t"><joint name="j"><hardwareInterface>x</hardwareInterface></joint></transmission>
  <link name="a"/><link name="b"/>
  <joint name="j" type="revolute"><parent link="a"/><child link="b"/>
    <limit lower="-1" upper="1" velocity="2"/></joint>
</robot>"#;
        let l = joint_limits(urdf, &names(&["j"])).unwrap();
        assert_eq!(l.max_velocity, vec![2.0]);
        let tree = kinematic_tree(urdf).unwrap();
        assert_eq!(tree.joints.len(), 1);
    }

    #[test]
    fn tree_reads_origins_axes_and_defaults() {
        let urdf = r#"<robot name="r">
  <link name="base"/><link name="l1"/><link name="l2"/>
  <joint name="j1" type="revolute"><parent link="base"/><child link="l1"/>
    <origin xyz="1 2 3" rpy="0.1 -0.2 0.3"/><axis xyz="0 0 1"/></joint>
  <joint name="j2" type="prismatic"><parent link="l1"/><child link="l2"/>
    <mimic joint="j1" multiplier="0.5"/></joint>
</robot>"#;
        let tree = kinematic_tree(urdf).unwrap();
        assert_eq!(tree.links, names(&["base", "l1", "l2"]));
        let j1 = &tree.joints[0];
        assert_eq!((j1.parent.as_str(), j1.child.as_str()), ("base", "l1"));
        assert_eq!(j1.joint_type, JointType::Revolute);
        assert_eq!(j1.origin_xyz, [1.0, 2.0, 3.0]);
        assert_eq!(j1.origin_rpy, [0.1, -0.2, 0.3]);
        assert_eq!(j1.axis, [0.0, 0.0, 1.0]);
        let j2 = &tree.joints[1];
        assert_eq!(j2.joint_type, JointType::Prismatic);
        assert_eq!((j2.origin_xyz, j2.origin_rpy), ([0.0; 3], [0.0; 3]));
        assert_eq!(j2.axis, [1.0, 0.0, 0.0]);
        assert_eq!(
            j2.mimic,
            Some(Mimic {
                joint: "j1".into(),
                multiplier: 0.5,
                offset: 0.0
            })
        );
    }

    #[test]
    fn tree_errors_name_the_element_and_what_was_expected() {
        let joint = |body: &str| {
            format!(
                r#"<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="revolute">{body}</joint></robot>"#
            )
        };
        let ends = r#"<parent link="a"/><child link="b"/>"#;
        for (body, needle) in [
            (format!(r#"{ends}<origin xyz="1 2"/>"#), "origin xyz"),
            (format!(r#"{ends}<origin xyz="1 2 3 4"/>"#), "origin xyz"),
            (format!(r#"{ends}<origin rpy="0 nan 0"/>"#), "origin rpy"),
            (format!(r#"{ends}<axis xyz="0 0 inf"/>"#), "axis xyz"),
            (
                format!(r#"{ends}<mimic joint="k" multiplier="x"/>"#),
                "mimic multiplier",
            ),
            (format!(r#"{ends}<mimic/>"#), "<mimic joint"),
            (r#"<child link="b"/>"#.to_string(), "<parent link"),
            (r#"<parent link="a"/>"#.to_string(), "<child link"),
        ] {
            let e = kinematic_tree(&joint(&body)).unwrap_err().to_string();
            assert!(e.contains("`j`") && e.contains(needle), "{body}: {e}");
        }
        let e = kinematic_tree(r#"<robot><joint name="j" type="ball"><parent link="a"/><child link="b"/></joint></robot>"#)
            .unwrap_err();
        assert!(e.to_string().contains("ball") && e.to_string().contains("revolute"));
        assert_eq!(
            kinematic_tree(r#"<robot><link name="a"/><link name="a"/></robot>"#),
            Err(UrdfError::Duplicate {
                element: "link",
                name: "a".into()
            })
        );
        let many = format!(
            "<robot>{}</robot>",
            "<link name=\"x\"/>".repeat(MAX_TREE_ELEMENTS + 1)
        );
        assert!(kinematic_tree(&many).is_err());
        let many: String = (0..=MAX_TREE_ELEMENTS)
            .map(|i| format!("<link name=\"l{i}\"/>"))
            .collect();
        assert_eq!(
            kinematic_tree(&format!("<robot>{many}</robot>")),
            Err(UrdfError::TooMany {
                element: "link",
                limit: MAX_TREE_ELEMENTS
            })
        );
        let deep = format!("{}{}", "<robot>".repeat(1000), "</robot>".repeat(1000));
        assert!(matches!(kinematic_tree(&deep), Err(UrdfError::Xml(_))));
    }
}
