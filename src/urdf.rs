//! Joint limits from a URDF (`robot_description`): `<joint name=...><limit lower upper velocity/></joint>`.
//! Continuous joints have no position limits; URDF carries no acceleration limits.

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

pub fn joint_limits(urdf: &str, joint_names: &[String]) -> Result<UrdfLimits, UrdfError> {
    if nesting_depth(urdf) > MAX_URDF_NESTING {
        return Err(UrdfError::Xml(format!(
            "elements nest deeper than {MAX_URDF_NESTING} levels"
        )));
    }
    let doc = roxmltree::Document::parse(urdf).map_err(|e| UrdfError::Xml(e.to_string()))?;
    let mut out = UrdfLimits {
        lower: Vec::with_capacity(joint_names.len()),
        upper: Vec::with_capacity(joint_names.len()),
        max_velocity: Vec::with_capacity(joint_names.len()),
    };
    for name in joint_names {
        let joint = doc
            .descendants()
            .find(|n| n.has_tag_name("joint") && n.attribute("name") == Some(name.as_str()))
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
}
