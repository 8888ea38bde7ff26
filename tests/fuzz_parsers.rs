//! Property-based fuzzing of every parser that takes bytes from outside the node (docs/fuzzing.md):
//! raw and compressed camera images and their preprocessing, the bundle manifest, node parameters and
//! `--param` overrides, the URDF and the instruction tokenizer.
//!
//! The properties: nothing panics (a bad input is an `Err`, never an abort), and whatever is accepted
//! satisfies the checks its parser documents (an image view holds step x height bytes, preprocessed pixels
//! are finite and inside the range the normalization implies, an accepted config keeps every documented
//! bound, an accepted bundle has sizes whose buffers can exist, ...).
//!
//! `cargo test` runs a short, deterministic pass (a fixed seed, a few dozen cases per property). A long
//! run takes its case count from PROPTEST_CASES and a random seed (PROPTEST_RNG_SEED to repeat one):
//! `PROPTEST_CASES=200000 cargo test --release --no-default-features --test fuzz_parsers -- --nocapture`.
//! Every property prints its case count and time. A failure prints the minimal (shrunk) input.

use std::fmt::Debug;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngSeed, TestCaseError, TestRunner};

use wam_policy::bundle::{Bundle, InstructionSpec, TokenizerKind};
use wam_policy::config::{self, NodeConfig, ParamSpec, ParamValue, Params, PARAMETERS};
use wam_policy::preprocess::{self, Encoding, ImageBounds, ImageError, ImageView, Preprocessor};
use wam_policy::tokenizer::{InstructionEncoder, Tokenizer};
use wam_policy::urdf;

// ---------------------------------------------------------------------------------------------------------
// Runner

/// Cases per property: PROPTEST_CASES, or `short` for `cargo test`.
fn cases(short: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(short)
}

/// Runs one property; the short pass (no PROPTEST_CASES) has a fixed seed so `cargo test` is repeatable.
fn run<S>(name: &str, short: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let mut config = ProptestConfig {
        cases: cases(short),
        // Failures are reported with their shrunk input; nothing is written into the source tree.
        failure_persistence: None,
        // Filters (a value that breaks its doc, a finite double) reject a share of every long run.
        max_local_rejects: u32::MAX,
        max_global_rejects: u32::MAX,
        ..ProptestConfig::default()
    };
    let long = std::env::var_os("PROPTEST_CASES").is_some();
    if !long && std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5eed_f022);
    }
    let n = config.cases;
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    ACCEPTED.with(|c| c.set(0));
    CALLS.with(|c| c.set(0));
    let result = runner.run(&strategy, |value| {
        CALLS.with(|c| c.set(c.get() + 1));
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} of {n} cases run ({} accepted by the parser) in {:.2} s",
        CALLS.with(|c| c.get()),
        ACCEPTED.with(|c| c.get()),
        start.elapsed().as_secs_f64(),
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

thread_local! {
    static ACCEPTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    /// Inputs tried, shrinking included.
    static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A property src/ once broke (docs/fuzzing.md, "Found"), fixed since: it fails like any other, and
/// the failure names the bug it is a regression of.
macro_rules! fixed_bug {
    ($id:literal, $cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(TestCaseError::fail(format!(
                "regression of {}: {}",
                $id,
                format!($($fmt)*)
            )));
        }
    };
}

/// Counts a case the parser under test accepted (the summary line shows how deep the cases got).
fn accepted() {
    ACCEPTED.with(|c| c.set(c.get() + 1));
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------------------
// Generic mutators

/// Interesting byte values for overwrites.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        1 => prop::sample::select(vec![
            0u8, 1, 0x7f, 0x80, 0xff, b'<', b'>', b'"', b'&', b'\n', b':', b'-', b'[', b'{', b'0', b'9',
        ]),
        1 => any::<u8>(),
    ]
}

#[derive(Debug, Clone)]
enum ByteMut {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Copies a run of the input over another place (repeats structure: chunks, markers, tags).
    Splice(Index, Index, usize),
}

fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| ByteMut::Flip(i, b)),
        3 => (any::<Index>(), byte()).prop_map(|(i, b)| ByteMut::Set(i, b)),
        2 => (any::<Index>(), prop::collection::vec(byte(), 1..16)).prop_map(|(i, b)| ByteMut::Insert(i, b)),
        2 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| ByteMut::Delete(i, n)),
        1 => any::<Index>().prop_map(ByteMut::Truncate),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| ByteMut::Splice(a, b, n)),
    ]
}

fn apply_byte_mut(data: &mut Vec<u8>, m: &ByteMut) {
    let len = data.len();
    match m {
        ByteMut::Insert(i, bytes) => {
            let at = if len == 0 { 0 } else { i.index(len + 1) };
            data.splice(at..at, bytes.iter().copied());
        }
        _ if len == 0 => {}
        ByteMut::Flip(i, b) => data[i.index(len)] ^= 1 << b,
        ByteMut::Set(i, v) => data[i.index(len)] = *v,
        ByteMut::Delete(i, n) => {
            let at = i.index(len);
            data.drain(at..(at + n).min(len));
        }
        ByteMut::Truncate(i) => data.truncate(i.index(len)),
        ByteMut::Splice(from, to, n) => {
            let (from, to) = (from.index(len), to.index(len));
            let n = (*n).min(len - from).min(len - to);
            let run: Vec<u8> = data[from..from + n].to_vec();
            data[to..to + n].copy_from_slice(&run);
        }
    }
}

fn byte_muts(max: usize) -> impl Strategy<Value = Vec<ByteMut>> {
    prop::collection::vec(byte_mut(), 0..=max)
}

/// A path into a YAML/JSON tree.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(serde_yaml::Value),
    Idx(usize),
}

fn tree_paths(v: &serde_yaml::Value, cur: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(cur.clone());
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, child) in m {
                cur.push(Seg::Key(k.clone()));
                tree_paths(child, cur, out);
                cur.pop();
            }
        }
        serde_yaml::Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                cur.push(Seg::Idx(i));
                tree_paths(child, cur, out);
                cur.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut serde_yaml::Value, path: &[Seg]) -> Option<&'a mut serde_yaml::Value> {
    let mut v = v;
    for seg in path {
        v = match (seg, v) {
            (Seg::Key(k), serde_yaml::Value::Mapping(m)) => m.get_mut(k)?,
            (Seg::Idx(i), serde_yaml::Value::Sequence(s)) => s.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(v)
}

/// One structural edit of a YAML/JSON tree: node choices are indices into the tree's paths at the time.
#[derive(Debug, Clone)]
enum TreeMut {
    Replace(Index, serde_yaml::Value),
    Remove(Index),
    /// In a sequence: appends a copy of the node's first element (duplicates: two cameras, joints, ...).
    Grow(Index),
    /// Replaces one node by a copy of another (a list where a map was, a name where a number was, ...).
    Copy(Index, Index),
    AddKey(Index, String, serde_yaml::Value),
}

fn apply_tree_mut(root: &mut serde_yaml::Value, m: &TreeMut) {
    let mut paths = Vec::new();
    tree_paths(root, &mut Vec::new(), &mut paths);
    let pick = |i: &Index| paths[i.index(paths.len())].clone();
    match m {
        TreeMut::Replace(i, value) => {
            if let Some(node) = node_mut(root, &pick(i)) {
                *node = value.clone();
            }
        }
        TreeMut::Remove(i) => {
            let path = pick(i);
            let Some((last, parent)) = path.split_last() else {
                return;
            };
            match (last, node_mut(root, parent)) {
                (Seg::Key(k), Some(serde_yaml::Value::Mapping(m))) => {
                    m.remove(k);
                }
                (Seg::Idx(i), Some(serde_yaml::Value::Sequence(s))) => {
                    s.remove(*i);
                }
                _ => {}
            }
        }
        TreeMut::Grow(i) => {
            if let Some(serde_yaml::Value::Sequence(s)) = node_mut(root, &pick(i)) {
                if let Some(first) = s.first().cloned() {
                    s.push(first);
                }
            }
        }
        TreeMut::Copy(from, to) => {
            let source = node_mut(root, &pick(from)).map(|n| n.clone());
            if let (Some(source), Some(node)) = (source, node_mut(root, &pick(to))) {
                *node = source;
            }
        }
        TreeMut::AddKey(i, key, value) => {
            if let Some(serde_yaml::Value::Mapping(m)) = node_mut(root, &pick(i)) {
                m.insert(serde_yaml::Value::String(key.clone()), value.clone());
            }
        }
    }
}

fn yaml_num(n: impl Into<serde_yaml::Number>) -> serde_yaml::Value {
    serde_yaml::Value::Number(n.into())
}

/// Values that sit on the edges of what a manifest or tokenizer file may say.
fn yaml_value(strings: &'static [&'static str]) -> impl Strategy<Value = serde_yaml::Value> {
    use serde_yaml::Value as Y;
    let scalars = vec![
        yaml_num(0i64),
        yaml_num(1i64),
        yaml_num(2i64),
        yaml_num(3i64),
        yaml_num(-1i64),
        yaml_num(7i64),
        yaml_num(8i64),
        yaml_num(32i64),
        yaml_num(65_536i64),
        yaml_num(1i64 << 32),
        yaml_num(1i64 << 40),
        yaml_num(i64::MAX),
        yaml_num(i64::MIN),
        yaml_num(u64::MAX),
        yaml_num(0.0f64),
        yaml_num(-0.0f64),
        yaml_num(0.1f64),
        yaml_num(1.5f64),
        yaml_num(1e-40f64),
        yaml_num(1e-45f64),
        yaml_num(5e-324f64),
        yaml_num(3.0e38f64),
        yaml_num(3.5e38f64),
        yaml_num(1e308f64),
        yaml_num(f64::NAN),
        yaml_num(f64::INFINITY),
        yaml_num(f64::NEG_INFINITY),
        Y::Bool(true),
        Y::Bool(false),
        Y::Null,
        Y::Sequence(vec![]),
        Y::Mapping(Default::default()),
        Y::Sequence(vec![yaml_num(0.5f64); 3]),
        Y::Sequence(vec![yaml_num(1e-40f64), yaml_num(1.0f64), yaml_num(1.0f64)]),
        Y::Sequence(vec![
            yaml_num(3.0e38f64),
            yaml_num(0.0f64),
            yaml_num(0.0f64),
        ]),
        Y::Sequence(vec![yaml_num(3i64), yaml_num(8i64), yaml_num(8i64)]),
        Y::Sequence(vec![
            yaml_num(3i64),
            yaml_num(8i64),
            yaml_num(8i64),
            yaml_num(1i64),
        ]),
        Y::Sequence(vec![
            yaml_num(1i64 << 32),
            yaml_num(1i64 << 32),
            yaml_num(1i64 << 32),
        ]),
        Y::Sequence(vec![Y::String("joint1".into()), Y::String("joint1".into())]),
        Y::Sequence(vec![Y::String(String::new())]),
        Y::Sequence(vec![Y::String("noisy_actions".into())]),
        Y::Sequence(vec![Y::String("time".into())]),
    ];
    let strings: Vec<Y> = strings.iter().map(|s| Y::String(s.to_string())).collect();
    prop_oneof![
        4 => prop::sample::select(scalars),
        3 => prop::sample::select(strings),
        1 => any::<i64>().prop_map(yaml_num),
        1 => any::<f64>().prop_map(yaml_num),
        1 => "\\PC{0,24}".prop_map(Y::String),
    ]
}

fn tree_mut(strings: &'static [&'static str]) -> impl Strategy<Value = TreeMut> {
    prop_oneof![
        6 => (any::<Index>(), yaml_value(strings)).prop_map(|(i, v)| TreeMut::Replace(i, v)),
        2 => any::<Index>().prop_map(TreeMut::Remove),
        1 => any::<Index>().prop_map(TreeMut::Grow),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| TreeMut::Copy(a, b)),
        1 => (any::<Index>(), prop::sample::select(strings).prop_map(String::from), yaml_value(strings))
            .prop_map(|(i, k, v)| TreeMut::AddKey(i, k, v)),
    ]
}

// ---------------------------------------------------------------------------------------------------------
// 1. Raw images and preprocessing

/// Image sizes: mostly small, often on the edges of usize arithmetic.
fn dim() -> impl Strategy<Value = usize> {
    // sensor_msgs/Image carries width, height and step as uint32: the range a message can reach. Sizes
    // beyond it (the library API takes usize) overflow: see `known_bug_image_view_size_overflow`.
    prop_oneof![
        4 => 0usize..48,
        2 => prop::sample::select(vec![
            u32::MAX as usize,
            u32::MAX as usize - 1,
            u32::MAX as usize / 3 + 1,
            u32::MAX as usize / 4 + 1,
            1 << 31,
            (1 << 31) + 1,
            1 << 20,
            65_536,
        ]),
        1 => any::<u32>().prop_map(|d| d as usize),
    ]
}

const ENCODINGS: &[&str] = &["rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1"];

fn encoding() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(ENCODINGS).prop_map(String::from),
        1 => prop::sample::select(vec![
            "", "RGB8", "rgb16", "yuv422", "bayer_rggb8", "16UC1", "32FC1", "rgb8\0", " rgb8", "8UC3",
        ])
        .prop_map(String::from),
        1 => "\\PC{0,12}",
    ]
}

/// Normalization as a bundle states it (the bundle checks mean finite, std finite and > 0).
fn norm() -> impl Strategy<Value = ([f32; 3], [f32; 3])> {
    (
        prop::array::uniform3(-2.0f32..2.0),
        prop::array::uniform3(0.01f32..10.0),
    )
}

/// The CHW output is finite, and each channel lies between the normalized values of levels 0 and 255.
fn check_normalized(
    out: &[f32],
    plane: usize,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(out.len(), 3 * plane);
    for c in 0..3 {
        // The normalized levels 0 and 255 (255 / 255 is exactly 1 in f32).
        let lo = (0.0f32 - mean[c]) / std[c];
        let hi = (1.0f32 - mean[c]) / std[c];
        for (i, v) in out[c * plane..(c + 1) * plane].iter().enumerate() {
            prop_assert!(
                v.is_finite() && *v >= lo && *v <= hi,
                "channel {c} pixel {i}: {v} outside [{lo}, {hi}] (mean {mean:?}, std {std:?})"
            );
        }
    }
    Ok(())
}

/// The pixel (x, y) of a raw image as RGB, straight from its bytes.
fn raw_pixel(enc: Encoding, data: &[u8], step: usize, x: usize, y: usize) -> [u8; 3] {
    let o = y * step + x * enc.channels();
    match enc {
        Encoding::Rgb8 | Encoding::Rgba8 => [data[o], data[o + 1], data[o + 2]],
        Encoding::Bgr8 | Encoding::Bgra8 => [data[o + 2], data[o + 1], data[o]],
        Encoding::Mono8 => [data[o]; 3],
    }
}

/// ImageView::new on any fields; what it accepts is processed by `p` and checked.
fn check_raw(
    p: &mut Preprocessor,
    out_size: (usize, usize),
    (mean, std): ([f32; 3], [f32; 3]),
    (width, height, step): (usize, usize, usize),
    encoding: &str,
    data: &[u8],
) -> Result<(), TestCaseError> {
    let result = ImageView::new(width, height, step, encoding, data);
    let needed = step as u128 * height as u128;
    if needed > data.len() as u128 {
        prop_assert!(
            result.is_err(),
            "ImageView::new({width}, {height}, {step}, {encoding:?}, {} bytes) accepted data shorter than \
             step x height = {needed}",
            data.len()
        );
    }
    let view = match result {
        Ok(view) => view,
        Err(ImageError::DataTooShort { expected, got }) => {
            prop_assert_eq!(got, data.len());
            prop_assert_eq!(expected as u128, needed, "DataTooShort states a wrong size");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    accepted();
    let enc = Encoding::parse(encoding).expect("accepted encoding parses");
    prop_assert_eq!(view.encoding, enc);
    prop_assert!(width > 0 && height > 0);
    prop_assert!(
        step as u128 >= width as u128 * enc.channels() as u128,
        "accepted step {step} < width {width} x {} channels",
        enc.channels()
    );
    let mut out = vec![f32::NAN; p.output_len()];
    let processed = p.process(&view, &mut out);
    prop_assert!(
        processed.is_ok(),
        "a valid view was refused: {:?}",
        processed
    );
    let (ow, oh) = out_size;
    check_normalized(&out, ow * oh, mean, std)?;
    if (width, height) == out_size {
        // No resize: every value is exactly its pixel's normalized level.
        for y in 0..height {
            for x in 0..width {
                let px = raw_pixel(enc, data, step, x, y);
                for c in 0..3 {
                    let expected = (px[c] as f32 / 255.0 - mean[c]) / std[c];
                    prop_assert_eq!(
                        out[c * ow * oh + y * ow + x],
                        expected,
                        "pixel {},{} channel {}",
                        x,
                        y,
                        c
                    );
                }
            }
        }
    }
    Ok(())
}

/// A well-formed raw image (small, valid encoding, padded rows) whose data may be cut or extended.
fn raw_image() -> impl Strategy<Value = (usize, usize, usize, String, Vec<u8>)> {
    (
        1usize..40,
        1usize..40,
        prop::sample::select(ENCODINGS),
        0usize..8,
        -8isize..8,
    )
        .prop_flat_map(|(w, h, enc, pad, delta)| {
            let step = w * Encoding::parse(enc).unwrap().channels() + pad;
            let len = ((step * h) as isize + delta).max(0) as usize;
            (
                Just(w),
                Just(h),
                Just(step),
                Just(enc.to_string()),
                prop::collection::vec(any::<u8>(), len),
            )
        })
}

/// Any fields: sizes on the edges of usize arithmetic with a few bytes of data.
fn wild_image() -> impl Strategy<Value = (usize, usize, usize, String, Vec<u8>)> {
    (
        dim(),
        dim(),
        prop_oneof![dim(), (0usize..4096)],
        encoding(),
        prop::collection::vec(any::<u8>(), 0..256),
    )
}

#[test]
fn fuzz_raw_image_view_and_preprocessing() {
    let strategy = (
        (1usize..17, 1usize..17),
        norm(),
        prop::collection::vec(prop_oneof![3 => raw_image(), 2 => wild_image()], 1..4),
    );
    run(
        "raw_image",
        96,
        strategy,
        |((ow, oh), (mean, std), images)| {
            // One preprocessor for a sequence of sizes: its scratch buffers grow and shrink between calls.
            let mut p = Preprocessor::new(ow, oh, mean, std);
            for (w, h, step, enc, data) in &images {
                check_raw(&mut p, (ow, oh), (mean, std), (*w, *h, *step), enc, data)?;
            }
            Ok(())
        },
    );
}

/// The same size in and out (no resize): exact values, each encoding.
#[test]
fn fuzz_raw_image_same_size_is_exact() {
    run(
        "raw_image_same_size",
        48,
        (raw_image(), norm()),
        |((w, h, step, enc, data), norm)| {
            let mut p = Preprocessor::new(w, h, norm.0, norm.1);
            check_raw(&mut p, (w, h), norm, (w, h, step), &enc, &data)
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// 1b. Compressed images

fn bounds(max_pixels: u64) -> ImageBounds {
    ImageBounds {
        max_pixels,
        max_compressed_bytes: 16_000_000,
    }
}

/// The decoder as the node calls it. (Its signature is the one place to follow when it changes.)
fn decode(data: &[u8], out: &mut Vec<u8>, max_pixels: u64) -> Result<(usize, usize), ImageError> {
    preprocess::decode_compressed(data, out, &bounds(max_pixels))
}

/// `decode`, with a panic turned into its message.
fn decode_catching(
    data: &[u8],
    out: &mut Vec<u8>,
    max_pixels: u64,
) -> Result<Result<(usize, usize), ImageError>, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode(data, out, max_pixels)
    }))
    .map_err(|payload| panic_message(&payload))
}

/// The known zune-jpeg overflow (`known_bug_jpeg_width_overflow`): a JPEG whose frame says a width or
/// height within 7 of 65 535.
fn known_jpeg_overflow(data: &[u8], message: &str) -> bool {
    let sof = data
        .windows(2)
        .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]));
    let size = |o: usize| data.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    data.starts_with(&[0xff, 0xd8])
        && message.contains("attempt to add with overflow")
        && sof.is_some_and(|o| {
            [size(o + 5), size(o + 7)]
                .iter()
                .any(|v| v.is_some_and(|v| v > 65_528))
        })
}

fn max_pixels() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(16_777_216u64),
        1 => prop::sample::select(vec![1u64, 63, 64, 100, 575, 576]),
    ]
}

/// A decoded image holds exactly w x h RGB pixels within the bounds, and goes through the raw path.
fn check_decoded(
    result: Result<(usize, usize), ImageError>,
    out: &[u8],
    max_pixels: u64,
    norm: ([f32; 3], [f32; 3]),
) -> Result<Option<(usize, usize)>, TestCaseError> {
    let Ok((w, h)) = result else {
        return Ok(None);
    };
    accepted();
    prop_assert!(w > 0 && h > 0, "decoded a {w}x{h} image");
    prop_assert!(
        (w as u64) * (h as u64) <= max_pixels,
        "decoded {w}x{h}, above max_pixels {max_pixels}"
    );
    prop_assert_eq!(out.len(), w * h * 3, "decoded {}x{}", w, h);
    let view = ImageView::new(w, h, w * 3, "rgb8", out);
    prop_assert!(view.is_ok(), "a decoded image is refused: {:?}", view.err());
    let mut p = Preprocessor::new(5, 3, norm.0, norm.1);
    let mut values = vec![f32::NAN; p.output_len()];
    let processed = p.process(&view.unwrap(), &mut values);
    prop_assert!(processed.is_ok(), "{:?}", processed);
    check_normalized(&values, 15, norm.0, norm.1)?;
    Ok(Some((w, h)))
}

/// A small image of the given colour type, filled from a seed.
fn make_image(w: u32, h: u32, kind: u8, seed: u64) -> image::DynamicImage {
    use image::DynamicImage as D;
    let mut s = seed | 1;
    let rgba = image::ImageBuffer::<image::Rgba<u16>, Vec<u16>>::from_fn(w, h, |_, _| {
        let mut px = [0u16; 4];
        for v in &mut px {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *v = s as u16;
        }
        image::Rgba(px)
    });
    let d = D::ImageRgba16(rgba);
    match kind {
        0 => D::ImageLuma8(d.to_luma8()),
        1 => D::ImageLumaA8(d.to_luma_alpha8()),
        2 => D::ImageRgb8(d.to_rgb8()),
        3 => D::ImageRgba8(d.to_rgba8()),
        4 => D::ImageLuma16(d.to_luma16()),
        5 => D::ImageRgb16(d.to_rgb16()),
        _ => d,
    }
}

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), format)
        .expect("test image encodes");
    bytes
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Recomputes every complete chunk's CRC, so that mutations reach the decoder past its checksum.
fn fix_png_crcs(png: &mut [u8]) {
    let mut o = 8;
    while o + 12 <= png.len() {
        let len = u32::from_be_bytes(png[o..o + 4].try_into().unwrap()) as usize;
        let Some(end) = (o + 8).checked_add(len).filter(|e| e + 4 <= png.len()) else {
            break;
        };
        let crc = crc32(&png[o + 4..end]);
        png[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        o = end + 4;
    }
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        2 => prop::sample::select(vec![
            0u32, 1, 2, 255, 4096, 4097, 65_535, 65_536, 1 << 20, 0x7fff_ffff, 0x8000_0000, u32::MAX,
        ]),
        1 => any::<u32>(),
    ]
}

/// Edits of the fields that size the decoded image.
#[derive(Debug, Clone)]
enum HeaderMut {
    Width(u32),
    Height(u32),
    /// PNG: bit depth, colour type, interlace; JPEG: number of components.
    Byte(u8, u8),
}

fn header_mut() -> impl Strategy<Value = HeaderMut> {
    prop_oneof![
        interesting_u32().prop_map(HeaderMut::Width),
        interesting_u32().prop_map(HeaderMut::Height),
        (
            0u8..3,
            prop::sample::select(vec![0u8, 1, 2, 3, 4, 6, 8, 16, 255])
        )
            .prop_map(|(f, v)| HeaderMut::Byte(f, v)),
    ]
}

fn apply_header_mut(bytes: &mut [u8], format: image::ImageFormat, m: &HeaderMut) {
    match format {
        image::ImageFormat::Png if bytes.len() >= 29 => match m {
            HeaderMut::Width(v) => bytes[16..20].copy_from_slice(&v.to_be_bytes()),
            HeaderMut::Height(v) => bytes[20..24].copy_from_slice(&v.to_be_bytes()),
            HeaderMut::Byte(f, v) => bytes[[24, 25, 28][*f as usize]] = *v,
        },
        image::ImageFormat::Jpeg => {
            // The start-of-frame segment: FF C0..C2, length, precision, height, width, components.
            let Some(o) = bytes
                .windows(2)
                .position(|w| w[0] == 0xff && (0xc0..=0xc2).contains(&w[1]))
            else {
                return;
            };
            if o + 10 > bytes.len() {
                return;
            }
            match m {
                HeaderMut::Width(v) => {
                    bytes[o + 7..o + 9].copy_from_slice(&(*v as u16).to_be_bytes())
                }
                HeaderMut::Height(v) => {
                    bytes[o + 5..o + 7].copy_from_slice(&(*v as u16).to_be_bytes())
                }
                HeaderMut::Byte(_, v) => bytes[o + 9] = *v,
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
struct EncodedCase {
    w: u32,
    h: u32,
    kind: u8,
    seed: u64,
    png: bool,
    header: Vec<HeaderMut>,
    bytes: Vec<ByteMut>,
    fix_crc: bool,
}

fn encoded_case() -> impl Strategy<Value = EncodedCase> {
    (
        (1u32..24, 1u32..24, 0u8..7, any::<u64>(), any::<bool>()),
        prop::collection::vec(header_mut(), 0..2),
        byte_muts(6),
        any::<bool>(),
    )
        .prop_map(
            |((w, h, kind, seed, png), header, bytes, fix_crc)| EncodedCase {
                w,
                h,
                kind,
                seed,
                png,
                header,
                bytes,
                fix_crc,
            },
        )
}

#[test]
fn fuzz_compressed_mutated_png_and_jpeg() {
    run(
        "compressed_mutated",
        64,
        (encoded_case(), max_pixels(), norm()),
        |(case, max_pixels, norm)| {
            let img = make_image(case.w, case.h, case.kind, case.seed);
            let (format, img) = if case.png {
                (image::ImageFormat::Png, img)
            } else if case.kind == 0 || case.kind == 1 || case.kind == 4 {
                (
                    image::ImageFormat::Jpeg,
                    image::DynamicImage::ImageLuma8(img.to_luma8()),
                )
            } else {
                (
                    image::ImageFormat::Jpeg,
                    image::DynamicImage::ImageRgb8(img.to_rgb8()),
                )
            };
            let original = encode(&img, format);
            let mut bytes = original.clone();
            for m in &case.header {
                apply_header_mut(&mut bytes, format, m);
            }
            for m in &case.bytes {
                apply_byte_mut(&mut bytes, m);
            }
            if case.png && (case.fix_crc || !case.header.is_empty()) {
                fix_png_crcs(&mut bytes);
            }
            let mut out = vec![7u8; 5];
            let result = match decode_catching(&bytes, &mut out, max_pixels) {
                Ok(result) => result,
                Err(message) => {
                    fixed_bug!(
                        "zune-jpeg-size-overflow",
                        !known_jpeg_overflow(&bytes, &message),
                        "{message}"
                    );
                    return Err(TestCaseError::fail(format!(
                        "decode_compressed panicked: {message}"
                    )));
                }
            };
            let decoded = check_decoded(result, &out, max_pixels, norm)?;
            if bytes == original && u64::from(case.w * case.h) <= max_pixels {
                // Unmutated within bounds: decodes, to the same pixels for the lossless PNG.
                prop_assert_eq!(decoded, Some((case.w as usize, case.h as usize)));
                if case.png {
                    prop_assert!(
                        out == img.to_rgb8().into_raw(),
                        "PNG pixels differ after decoding"
                    );
                }
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_compressed_arbitrary_bytes() {
    let magic = prop::sample::select(vec![
        &b""[..],
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
        b"GIF89a",
        b"BM",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"II*\x00",
    ]);
    run(
        "compressed_bytes",
        96,
        (
            magic,
            prop::collection::vec(any::<u8>(), 0..512),
            max_pixels(),
            norm(),
        ),
        |(magic, tail, max_pixels, norm)| {
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&tail);
            let mut out = Vec::new();
            let result = match decode_catching(&bytes, &mut out, max_pixels) {
                Ok(result) => result,
                Err(message) => {
                    fixed_bug!(
                        "zune-jpeg-size-overflow",
                        !known_jpeg_overflow(&bytes, &message),
                        "{message}"
                    );
                    return Err(TestCaseError::fail(format!(
                        "decode_compressed panicked: {message}"
                    )));
                }
            };
            check_decoded(result, &out, max_pixels, norm)?;
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// 2. The bundle manifest

const MANIFEST_STRINGS: &[&str] = &[
    "",
    "x",
    "wam.yaml",
    "encode.onnx",
    "decode.onnx",
    "vocab.txt",
    "tokenizer.json",
    "vocab",
    "absolute_joint_position",
    "relative_joint_position",
    "../wam_test/encode.onnx",
    "/dev/null",
    "/",
    ".",
    "latents",
    "noisy_actions",
    "noisy_video",
    "time",
    "action_target",
    "joint1",
    "exterior",
    "format_version",
    "cameras",
    "image",
    "std",
    "dt",
    "decode",
    "~",
    "null",
    ".nan",
    "1e400",
];

/// A private copy of models/wam_test whose wam.yaml each case rewrites.
struct BundleDir {
    dir: tempfile::TempDir,
    original: String,
}

impl BundleDir {
    fn new() -> Self {
        let src = manifest_dir().join("models/wam_test");
        let dir = tempfile::Builder::new()
            .prefix("wam_fuzz_bundle")
            .tempdir()
            .unwrap();
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let original = std::fs::read_to_string(src.join("wam.yaml")).unwrap();
        BundleDir { dir, original }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
    fn write(&self, manifest: &[u8]) {
        std::fs::write(self.dir.path().join("wam.yaml"), manifest).unwrap();
    }
}

/// The largest element count of an f32/i64 buffer that can exist at all.
const MAX_ELEMS: u128 = (isize::MAX as u128) / 8;

/// What an accepted bundle promises to the stages after it.
fn check_bundle(bundle: &Bundle) -> Result<(), TestCaseError> {
    accepted();
    let m = &bundle.manifest;
    let d = bundle.dims();
    // Every buffer the node allocates from the manifest's sizes can exist (no usize overflow, no
    // capacity overflow). Products in u128, the way the node's `usize` arithmetic must not overflow.
    let prod = |xs: &[usize]| xs.iter().fold(1u128, |a, x| a.saturating_mul(*x as u128));
    let (c, t, f) = (d.cameras, d.context_frames, d.video_frames);
    let [lc, lh, lw] = d.latent;
    let pixels = (0..c)
        .map(|v| prod(&[d.size(v).0, d.size(v).1]))
        .max()
        .unwrap_or(0);
    let sizes = [
        (
            "frame (3 x height x width)",
            prod(&[3]).saturating_mul(pixels),
        ),
        ("obs frames", prod(&[c, t, 3]).saturating_mul(pixels)),
        ("predicted frames", prod(&[c, f, 3]).saturating_mul(pixels)),
        ("video latents", prod(&[c, f, lc, lh, lw])),
        ("obs latents", prod(&[c, t, lc, lh, lw])),
        ("actions", prod(&[d.horizon, d.action])),
        ("tokens", prod(&[d.tokens])),
    ];
    for (what, n) in sizes {
        fixed_bug!(
            "bundle-sizes",
            n <= MAX_ELEMS,
            "accepted a bundle whose {what} buffer has {n} elements (usize overflow): dims {d:?}"
        );
    }
    for (stage, tensors) in bundle.expected_tensors() {
        for t in tensors.inputs.iter().chain(&tensors.outputs) {
            fixed_bug!(
                "bundle-sizes",
                t.shape.iter().all(|x| *x >= 1),
                "stage {stage} tensor {}: shape {:?} (a size turned negative reads as dynamic)",
                t.name,
                t.shape
            );
        }
    }
    let vdt = bundle.video_dt();
    fixed_bug!(
        "bundle-video-dt",
        vdt.is_finite() && vdt > 0.0,
        "video_dt() = {vdt}"
    );
    for c in 0..3 {
        for level in [0.0f32, 1.0] {
            let v = (level - m.image.mean[c]) / m.image.std[c];
            fixed_bug!(
                "bundle-image-norm",
                v.is_finite(),
                "image level {level} of channel {c} normalizes to {v} (mean {:?}, std {:?})",
                m.image.mean,
                m.image.std
            );
        }
    }
    // The tokenizer the bundle names loads or is refused, and encodes.
    if let Ok(enc) = InstructionEncoder::for_bundle(bundle) {
        let mut ids = vec![0i64; d.tokens.min(4096)];
        let r = enc.encode_into("reach the red cube", &mut ids);
        prop_assert!(r.is_ok(), "{:?}", r.err());
    }
    Ok(())
}

#[test]
fn fuzz_bundle_manifest_mutations() {
    let dir = BundleDir::new();
    let original: serde_yaml::Value = serde_yaml::from_str(&dir.original).unwrap();
    run(
        "bundle_manifest_mutated",
        64,
        (
            prop::collection::vec(tree_mut(MANIFEST_STRINGS), 1..5),
            prop_oneof![3 => Just(vec![]), 1 => byte_muts(3)],
        ),
        |(tree, bytes)| {
            let mut value = original.clone();
            for m in &tree {
                apply_tree_mut(&mut value, m);
            }
            let mut text = serde_yaml::to_string(&value).unwrap().into_bytes();
            for m in &bytes {
                apply_byte_mut(&mut text, m);
            }
            dir.write(&text);
            if let Ok(bundle) = Bundle::load(dir.path()) {
                check_bundle(&bundle)?;
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_bundle_manifest_text() {
    let dir = BundleDir::new();
    let original = dir.original.clone().into_bytes();
    run(
        "bundle_manifest_text",
        64,
        prop_oneof![
            2 => byte_muts(8).prop_map(move |m| {
                let mut text = original.clone();
                for m in &m {
                    apply_byte_mut(&mut text, m);
                }
                text
            }),
            1 => prop::collection::vec(any::<u8>(), 0..256),
            1 => "(format_version: 1\n|cameras:\n|  - \\{name: a, height: 9, width: 9\\}\n|\\PC{0,8}|&a |\\*a|\\[|\\]|\\{|\\}|: |- |\n  ){0,40}"
                .prop_map(String::into_bytes),
        ],
        |text| {
            dir.write(&text);
            if let Ok(bundle) = Bundle::load(dir.path()) {
                check_bundle(&bundle)?;
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// 3. Node parameters and overrides

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            -f64::MAX,
            1e300,
            -1.0,
            0.5,
            1.0,
            2.0,
            100.0,
            1e-9,
        ]),
        1 => -10.0f64..10.0,
        1 => any::<f64>(),
    ]
}

fn integer() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            2,
            4,
            7,
            i32::MAX as i64,
            i32::MAX as i64 + 1,
            u32::MAX as i64 + 1,
            i64::MAX,
        ]),
        1 => 0i64..16,
        1 => any::<i64>(),
    ]
}

const URDF_AB: &str = r#"<robot name="r"><joint name="a" type="revolute"><limit lower="-1" upper="1" velocity="2"/></joint><joint name="b" type="continuous"><limit velocity="3"/></joint></robot>"#;

fn param_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "", "raw", "compressed", "chunk", "stream", "replace", "crossfade", "prefix", "auto",
            "measured", "setpoint", "float64_multi_array", "joint_state", "tensorrt", "cuda", "cpu",
            "/b", "a", "b", "topic", URDF_AB, "<robot", "h264", "CPU",
        ])
        .prop_map(String::from),
        1 => "\\PC{0,16}",
    ]
}

/// Any value, of any type.
fn param_value() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        any::<bool>().prop_map(ParamValue::Bool),
        integer().prop_map(ParamValue::Integer),
        double().prop_map(ParamValue::Double),
        param_string().prop_map(ParamValue::String),
        prop::collection::vec(any::<bool>(), 0..4).prop_map(ParamValue::BoolArray),
        prop::collection::vec(integer(), 0..4).prop_map(ParamValue::IntegerArray),
        prop::collection::vec(double(), 0..4).prop_map(ParamValue::DoubleArray),
        prop::collection::vec(param_string(), 0..4).prop_map(ParamValue::StringArray),
    ]
}

/// A value of the type the parameter's doc states (so that more configs get through to the checks).
fn typed_value(spec: &ParamSpec) -> BoxedStrategy<ParamValue> {
    let kind = spec.kind();
    if kind.starts_with("bool") {
        any::<bool>().prop_map(ParamValue::Bool).boxed()
    } else if kind.starts_with("double array") {
        prop_oneof![
            3 => prop::collection::vec(double(), 0..4).prop_map(ParamValue::DoubleArray),
            1 => prop::collection::vec(integer(), 0..4).prop_map(ParamValue::IntegerArray),
        ]
        .boxed()
    } else if kind.starts_with("double") {
        prop_oneof![
            3 => double().prop_map(ParamValue::Double),
            1 => integer().prop_map(ParamValue::Integer),
        ]
        .boxed()
    } else if kind.starts_with("integer") {
        integer().prop_map(ParamValue::Integer).boxed()
    } else if kind.starts_with("string array") {
        prop::collection::vec(param_string(), 0..4)
            .prop_map(ParamValue::StringArray)
            .boxed()
    } else {
        param_string().prop_map(ParamValue::String).boxed()
    }
}

fn param_entry() -> impl Strategy<Value = (String, ParamValue)> {
    let known = (0..PARAMETERS.len()).prop_flat_map(|i| {
        let spec = &PARAMETERS[i];
        (
            Just(spec.name.to_string()),
            prop_oneof![4 => typed_value(spec), 1 => param_value()],
        )
    });
    let unknown = (
        prop_oneof![
            prop::sample::select(vec![
                "bogus",
                "qos_overrides./joint_states.subscription.depth",
                "joint_limits",
                "",
                "BUNDLE_PATH",
                "bundle_path ",
                "joint_limits.lower.0",
            ])
            .prop_map(String::from),
            "\\PC{0,12}",
        ],
        param_value(),
    );
    prop_oneof![8 => known, 1 => unknown]
}

fn strings(v: &[&str]) -> ParamValue {
    ParamValue::StringArray(v.iter().map(|s| s.to_string()).collect())
}

/// Starting points: nothing, the smallest dry run, limits given, limits from a URDF.
fn base_params(which: u8) -> Params {
    let mut p = Params::new();
    if which == 0 {
        return p;
    }
    p.insert("bundle_path".into(), ParamValue::String("/b".into()));
    match which {
        1 => {
            p.insert("dry_run".into(), ParamValue::Bool(true));
        }
        2 => {
            p.insert("joint_names".into(), strings(&["a", "b"]));
            p.insert(
                "joint_limits.lower".into(),
                ParamValue::DoubleArray(vec![-1.0, -2.0]),
            );
            p.insert(
                "joint_limits.upper".into(),
                ParamValue::DoubleArray(vec![1.0, 2.0]),
            );
            p.insert(
                "joint_limits.max_velocity".into(),
                ParamValue::DoubleArray(vec![1.0, 1.0]),
            );
            p.insert("camera_names".into(), strings(&["exterior"]));
        }
        _ => {
            p.insert("joint_names".into(), strings(&["a", "b"]));
            p.insert(
                "robot_description".into(),
                ParamValue::String(URDF_AB.into()),
            );
        }
    }
    p
}

fn as_double(v: &ParamValue) -> Option<f64> {
    match v {
        ParamValue::Double(d) => Some(*d),
        ParamValue::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

/// Whether `v` is a value the doc of `spec` allows (type and stated bound); None: a kind this test
/// does not know (checked for no panic only).
fn documented_ok(spec: &ParamSpec, v: &ParamValue) -> Option<bool> {
    let kind = spec.kind();
    let ok = match kind {
        "bool" => matches!(v, ParamValue::Bool(_)),
        "string" => matches!(v, ParamValue::String(_)),
        "string array" => matches!(v, ParamValue::StringArray(_)),
        "double" => as_double(v).is_some_and(f64::is_finite),
        "double > 0" => as_double(v).is_some_and(|x| x.is_finite() && x > 0.0),
        "double >= 0" => as_double(v).is_some_and(|x| x.is_finite() && x >= 0.0),
        "integer >= 0" => matches!(v, ParamValue::Integer(i) if *i >= 0),
        "integer >= 1" => matches!(v, ParamValue::Integer(i) if *i >= 1),
        "double array" => {
            let positive = spec.doc.contains("(> 0)");
            match v {
                ParamValue::DoubleArray(x) => {
                    x.iter().all(|x| x.is_finite() && (!positive || *x > 0.0))
                }
                ParamValue::IntegerArray(x) => x.iter().all(|x| !positive || *x > 0),
                _ => false,
            }
        }
        _ => return None,
    };
    Some(ok)
}

fn check_config(params: &Params, c: &NodeConfig) -> Result<(), TestCaseError> {
    for (name, v) in params {
        match PARAMETERS.iter().find(|p| p.name == name) {
            None => prop_assert!(
                name.starts_with("qos_overrides."),
                "unknown parameter `{name}` accepted"
            ),
            Some(spec) => prop_assert!(
                documented_ok(spec, v) != Some(false),
                "`{name}` = {v:?} accepted against its doc `{}`",
                spec.kind()
            ),
        }
    }
    let positive = [
        ("sync_slop_s", c.sync_slop_s),
        ("max_image_age_s", c.max_image_age_s),
        ("max_joint_state_age_s", c.max_joint_state_age_s),
        ("control_period_s", c.control_period_s),
        ("max_stamp_lead_s", c.max_stamp_lead_s),
        ("max_joint_state_rate_hz", c.max_joint_state_rate_hz),
        ("status_period_s", c.status_period_s),
        ("stream_rate_hz", c.execution.stream_rate_hz),
    ];
    for (name, v) in positive {
        prop_assert!(v.is_finite() && v > 0.0, "{name} = {v}");
    }
    let non_negative = [
        ("replan_margin_s", c.execution.replan_margin_s),
        ("ramp_in_s", c.execution.ramp_in_s),
        ("min_lead_s", c.execution.min_lead_s),
        ("debug_extra_latency_s", c.execution.debug_extra_latency_s),
    ];
    for (name, v) in non_negative {
        prop_assert!(v.is_finite() && v >= 0.0, "{name} = {v}");
    }
    prop_assert!(c.execution.replan_threshold_s.is_finite());
    prop_assert!(c.execution.crossfade_steps >= 1);
    prop_assert!(!c.bundle_path.as_os_str().is_empty());
    prop_assert_eq!(c.camera_topics.len(), c.camera_names.len());
    prop_assert!(c.camera_topics.iter().all(|t| !t.is_empty()));
    prop_assert!(!c.runtime.providers.is_empty());
    for (i, p) in c.runtime.providers.iter().enumerate() {
        prop_assert!(
            !c.runtime.providers[..i].contains(p),
            "provider {:?} twice",
            p
        );
    }
    prop_assert!(c.runtime.device_id >= 0);
    match &c.limits {
        None => prop_assert!(c.execution.dry_run, "commands without limits"),
        Some(l) => {
            let n = c.joint_names.len();
            prop_assert!(n > 0);
            prop_assert!(l.lower.len() == n && l.upper.len() == n && l.max_velocity.len() == n);
            for i in 0..n {
                prop_assert!(
                    l.lower[i] < l.upper[i],
                    "joint {i}: {} !< {}",
                    l.lower[i],
                    l.upper[i]
                );
                // Infinite only as a continuous joint's (-inf, inf) from a URDF.
                prop_assert!(
                    (l.lower[i].is_finite() && l.upper[i].is_finite())
                        || (l.lower[i] == f64::NEG_INFINITY && l.upper[i] == f64::INFINITY),
                    "joint {i}: [{}, {}]",
                    l.lower[i],
                    l.upper[i]
                );
                prop_assert!(l.max_velocity[i].is_finite() && l.max_velocity[i] > 0.0);
            }
            prop_assert!(l.max_jump.is_finite() && l.max_jump > 0.0);
            if let Some(acc) = &l.max_acceleration {
                prop_assert_eq!(acc.len(), n);
                prop_assert!(acc.iter().all(|a| a.is_finite() && *a > 0.0), "{:?}", acc);
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_node_config_from_params() {
    run(
        "config_from_params",
        256,
        (
            0u8..4,
            prop::collection::vec(param_entry(), 0..6),
            prop::collection::vec(any::<Index>(), 0..2),
        ),
        |(base, entries, removals)| {
            let mut params = base_params(base);
            for idx in &removals {
                if !params.is_empty() {
                    let key = params.keys().nth(idx.index(params.len())).unwrap().clone();
                    params.remove(&key);
                }
            }
            for (name, value) in entries {
                params.insert(name, value);
            }
            match NodeConfig::from_params(&params) {
                Ok(c) => {
                    accepted();
                    check_config(&params, &c)
                }
                Err(e) => {
                    prop_assert!(!e.name.is_empty() || params.contains_key(""), "{e}");
                    Ok(())
                }
            }
        },
    );
}

/// One bad value among valid ones is always refused, naming something.
#[test]
fn fuzz_node_config_one_bad_value_is_refused() {
    let bad = (0..PARAMETERS.len(), param_value(), 1u8..4)
        .prop_filter_map("the value must break its doc", |(i, v, base)| {
            (documented_ok(&PARAMETERS[i], &v) == Some(false)).then_some((i, v, base))
        });
    run("config_bad_value", 256, bad, |(i, value, base)| {
        let mut params = base_params(base);
        params.insert(PARAMETERS[i].name.to_string(), value.clone());
        let r = NodeConfig::from_params(&params);
        prop_assert!(
            r.is_err(),
            "`{}` = {value:?} (doc `{}`) accepted",
            PARAMETERS[i].name,
            PARAMETERS[i].kind()
        );
        Ok(())
    });
}

#[test]
fn fuzz_parse_override() {
    run(
        "parse_override",
        256,
        prop_oneof![
            "\\PC{0,12}=\\PC{0,24}",
            "\\PC{0,32}",
            "[a-z_.]{1,12}=(\\[|\\]|\\{|\\}|, |-|0x|\\.|e|[0-9]|true|null|~|&a |\\*a|!!|\n|'|\"|#|:){0,24}",
        ],
        |arg| {
            if let Ok((name, _)) = config::parse_override(&arg) {
                accepted();
                prop_assert_eq!(Some(name.as_str()), arg.split_once('=').map(|s| s.0));
            }
            Ok(())
        },
    );
}

/// `name=value` of a value written the way a person would gives that value back.
#[test]
fn fuzz_parse_override_round_trip() {
    let value = prop_oneof![
        any::<bool>().prop_map(|b| (b.to_string(), ParamValue::Bool(b))),
        any::<i64>().prop_map(|i| (i.to_string(), ParamValue::Integer(i))),
        any::<f64>()
            .prop_filter("finite", |d| d.is_finite())
            .prop_map(|d| (format!("{d:?}"), ParamValue::Double(d))),
        "[a-z][a-z_/]{0,11}"
            .prop_filter("not a YAML keyword", |s| ![
                "true", "false", "null", "y", "n", "yes", "no", "on", "off"
            ]
            .contains(&s.as_str()))
            .prop_map(|s| (s.clone(), ParamValue::String(s))),
        prop::collection::vec(-1e6f64..1e6, 1..4).prop_map(|v| {
            let text = v
                .iter()
                .map(|d| format!("{d:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            (format!("[{text}]"), ParamValue::DoubleArray(v))
        }),
    ];
    run("parse_override_round_trip", 256, value, |(text, value)| {
        let parsed = config::parse_override(&format!("sync_slop_s={text}"));
        if parsed.is_ok() {
            accepted();
        }
        prop_assert_eq!(parsed, Ok(("sync_slop_s".to_string(), value)), "{}", text);
        Ok(())
    });
}

/// The parameters in a recording's metadata: any text is parsed or refused; written ones read back.
#[test]
fn fuzz_params_yaml() {
    let names: Vec<String> = PARAMETERS.iter().map(|p| p.name.to_string()).collect();
    let entry = (
        prop_oneof![3 => prop::sample::select(names), 1 => "\\PC{0,12}"],
        param_value().prop_filter("NaN is not equal to itself", |v| match v {
            ParamValue::Double(d) => !d.is_nan(),
            ParamValue::DoubleArray(d) => !d.iter().any(|x| x.is_nan()),
            _ => true,
        }),
    );
    run(
        "params_yaml",
        128,
        (
            prop::collection::btree_map(entry.0, entry.1, 0..6),
            "\\PC{0,64}",
        ),
        |(params, text)| {
            if config::params_from_yaml(&text).is_ok() {
                accepted();
            }
            let yaml = config::params_to_yaml(&params);
            prop_assert!(yaml.is_ok(), "{:?}", yaml.err());
            let yaml = yaml.unwrap();
            let back = config::params_from_yaml(&yaml);
            prop_assert_eq!(back.ok(), Some(params), "{}", yaml);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// 4. URDF

fn limit_number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "0", "-1.5", "1.25", "2", "nan", "NaN", "inf", "-inf", "infinity", "1e309", "-1e309", "1e-320",
            " 2.0 ", "", "abc", "0x10", "1_000", "+3", "-0", "1e308", "\u{663}", "1,5", "&#49;", "&amp;",
        ])
        .prop_map(String::from),
        1 => any::<f64>().prop_map(|d| d.to_string()),
        1 => "\\PC{0,8}",
    ]
}

#[derive(Debug, Clone)]
struct UrdfJoint {
    name: String,
    kind: String,
    limit: Option<[Option<String>; 3]>,
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
}

const JOINT_NAMES: &[&str] = &["a", "b", "c", "shoulder", "j 1", "", "&"];

fn urdf_joint() -> impl Strategy<Value = UrdfJoint> {
    (
        prop_oneof![4 => prop::sample::select(JOINT_NAMES).prop_map(String::from), 1 => "\\PC{0,6}"],
        prop::sample::select(vec!["revolute", "continuous", "prismatic", "fixed", "", "Continuous"]),
        prop::option::weighted(0.85, prop::array::uniform3(prop::option::weighted(0.85, limit_number()))),
    )
        .prop_map(|(name, kind, limit)| UrdfJoint {
            name,
            kind: kind.to_string(),
            limit,
        })
}

fn urdf_text(joints: &[UrdfJoint], raw_entities: bool) -> String {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<robot name=\"r\">\n");
    for j in joints {
        s.push_str(&format!(
            "  <joint name=\"{}\" type=\"{}\">",
            escape_attr(&j.name),
            j.kind
        ));
        if let Some(limit) = &j.limit {
            s.push_str("<limit");
            for (attr, v) in ["lower", "upper", "velocity"].iter().zip(limit) {
                if let Some(v) = v {
                    let v = if raw_entities {
                        v.clone()
                    } else {
                        escape_attr(v)
                    };
                    s.push_str(&format!(" {attr}=\"{v}\""));
                }
            }
            s.push_str(" effort=\"1\"/>");
        }
        s.push_str("</joint>\n");
    }
    s.push_str("</robot>\n");
    s
}

fn check_urdf(text: &str, names: &[String]) -> Result<(), TestCaseError> {
    let Ok(l) = urdf::joint_limits(text, names) else {
        return Ok(());
    };
    accepted();
    let n = names.len();
    prop_assert!(l.lower.len() == n && l.upper.len() == n && l.max_velocity.len() == n);
    for (i, name) in names.iter().enumerate() {
        prop_assert!(
            l.max_velocity[i].is_finite(),
            "velocity {}",
            l.max_velocity[i]
        );
        let continuous = l.lower[i] == f64::NEG_INFINITY && l.upper[i] == f64::INFINITY;
        prop_assert!(
            continuous || (l.lower[i].is_finite() && l.upper[i].is_finite()),
            "joint {}: [{}, {}]",
            name,
            l.lower[i],
            l.upper[i]
        );
    }
    Ok(())
}

#[test]
fn fuzz_urdf_joint_limits() {
    let names = prop::collection::vec(
        prop_oneof![4 => prop::sample::select(JOINT_NAMES).prop_map(String::from), 1 => "\\PC{0,6}"],
        0..5,
    );
    run(
        "urdf",
        128,
        (
            prop::collection::vec(urdf_joint(), 0..6),
            any::<bool>(),
            prop_oneof![3 => Just(vec![]), 1 => byte_muts(4)],
            names,
        ),
        |(joints, raw, muts, names)| {
            let mut bytes = urdf_text(&joints, raw).into_bytes();
            for m in &muts {
                apply_byte_mut(&mut bytes, m);
            }
            check_urdf(&String::from_utf8_lossy(&bytes), &names)
        },
    );
}

#[test]
fn fuzz_urdf_arbitrary_text() {
    run(
        "urdf_text",
        128,
        (
            prop_oneof![
                "\\PC{0,64}",
                "(<robot>|</robot>|<joint name=\"a\">|</joint>|<limit lower=\"-1\" upper=\"1\" velocity=\"1\"/>|<!DOCTYPE r \\[<!ENTITY e \"1\">\\]>|&e;|<!--|-->|<!\\[CDATA\\[|\\]\\]>|<\\?x\\?>|\\PC{0,4}){0,24}",
            ],
            prop::collection::vec(prop::sample::select(JOINT_NAMES).prop_map(String::from), 0..3),
        ),
        |(text, names)| check_urdf(&text, &names),
    );
}

/// Entity expansion ("billion laughs") is refused, quickly.
#[test]
fn urdf_entities_are_refused() {
    let names = vec!["a".to_string()];
    let start = Instant::now();
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;"><!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;"><!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;"><!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">]><robot><joint name="a"><limit lower="&h;" upper="1" velocity="1"/></joint></robot>"#;
    assert!(urdf::joint_limits(laughs, &names).is_err());
    assert!(start.elapsed().as_secs() < 10, "{:?}", start.elapsed());
}

/// Deeply nested manifests and tokenizer files are refused (serde's recursion limits), not a stack
/// overflow.
#[test]
fn manifest_and_tokenizer_nesting_is_refused() {
    let dir = BundleDir::new();
    for text in [
        // Past the recursion limit (128), short of the quadratic time of `known_slow_yaml_flow_nesting`.
        "[".repeat(2_000),
        "{a: ".repeat(2_000),
        "- ".repeat(2_000),
        format!(
            "format_version: {}1{}",
            "[".repeat(1_000),
            "]".repeat(1_000)
        ),
    ] {
        dir.write(text.as_bytes());
        assert!(Bundle::load(dir.path()).is_err());
    }
    let spec = InstructionSpec {
        tokenizer: TokenizerKind::HuggingFace,
        file: "tokenizer.json".into(),
        max_tokens: 8,
        pad_id: 0,
        unk_id: 1,
    };
    for text in ["[".repeat(100_000), "{\"a\":".repeat(100_000)] {
        std::fs::write(dir.path().join("tokenizer.json"), text).unwrap();
        assert!(Tokenizer::load(&spec, &dir.path()).is_err());
    }
}

// ---------------------------------------------------------------------------------------------------------
// 5. Instructions

fn test_bundle() -> &'static Bundle {
    static B: OnceLock<Bundle> = OnceLock::new();
    B.get_or_init(|| Bundle::load(manifest_dir().join("models/wam_test")).unwrap())
}

fn vocab_lines() -> usize {
    std::fs::read_to_string(manifest_dir().join("models/wam_test/vocab.txt"))
        .unwrap()
        .lines()
        .count()
}

/// Instructions: any text, words of the vocabulary with punctuation and case, and huge ones.
fn instruction() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "reach", "the", "RED", "cube,", "...", "<pad>", "<unk>", "¡Hola!", "ǅ", "İ", "ß", "\u{0}",
        "\t", "\u{2028}", "\u{feff}", "ﬃ", " ",
    ]);
    prop_oneof![
        3 => "\\PC{0,64}",
        1 => any::<String>(),
        2 => prop::collection::vec(word.clone(), 0..24).prop_map(|w| w.join(" ")),
        1 => (prop::collection::vec(word, 1..6), 1usize..200_000).prop_map(|(w, n)| {
            let unit = w.join(" ") + " ";
            unit.repeat(n.min((4 << 20) / unit.len().max(1)))
        }),
    ]
}

#[test]
fn fuzz_instruction_vocab_tokenizer() {
    let bundle = test_bundle();
    let encoder = InstructionEncoder::for_bundle(bundle).unwrap();
    let spec = &bundle.manifest.instruction;
    let (pad, unk, lines) = (spec.pad_id, spec.unk_id, vocab_lines() as i64);
    run(
        "instruction_vocab",
        128,
        (
            instruction(),
            prop_oneof![Just(bundle.manifest.instruction.max_tokens), 0usize..64],
        ),
        |(text, len)| {
            let mut out = vec![i64::MIN; len];
            let r = encoder.encode_into(&text, &mut out);
            prop_assert!(r.is_ok(), "{:?}", r.err());
            accepted();
            for id in &out {
                prop_assert!(
                    *id == pad || *id == unk || (0..lines).contains(id),
                    "id {id} is not a vocabulary line, pad or unk"
                );
            }
            Ok(())
        },
    );
}

/// The vocabulary file a bundle ships: any text loads or is refused, and what loads encodes.
#[test]
fn fuzz_instruction_vocab_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = InstructionSpec {
        tokenizer: TokenizerKind::Vocab,
        file: "vocab.txt".into(),
        max_tokens: 8,
        pad_id: 0,
        unk_id: 1,
    };
    run(
        "instruction_vocab_file",
        64,
        (
            prop::collection::vec(any::<u8>(), 0..128),
            "\\PC{0,8}( \\PC{0,8}){0,4}",
            0usize..12,
        ),
        |(file, text, len)| {
            std::fs::write(dir.path().join("vocab.txt"), &file).unwrap();
            if let Ok(t) = Tokenizer::load(&spec, dir.path()) {
                accepted();
                let lines = String::from_utf8_lossy(&file).lines().count() as i64;
                let mut out = vec![-7i64; len];
                prop_assert!(t.encode_into(&text, 0, &mut out).is_ok());
                prop_assert!(
                    out.iter().all(|id| (0..lines.max(2)).contains(id)),
                    "{:?}",
                    out
                );
            }
            Ok(())
        },
    );
}

const HF_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":0,"content":"<pad>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],"normalizer":{"type":"Lowercase"},"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"<pad>":0,"<unk>":1,"reach":2,"the":3,"red":4,"cube":5},"unk_token":"<unk>"}}"#;

const HF_STRINGS: &[&str] = &[
    "",
    "Precompiled",
    "precompiled_charsmap",
    "<unk>",
    "<pad>",
    "WordLevel",
    "WordPiece",
    "BPE",
    "Unigram",
    "Whitespace",
    "ByteLevel",
    "Metaspace",
    "Lowercase",
    "NFKC",
    "Sequence",
    "BertPreTokenizer",
    "TemplateProcessing",
    "BertProcessing",
    "Split",
    "Replace",
    "type",
    "vocab",
    "merges",
    "unk_token",
    "unk_id",
    "pattern",
    "##",
];

#[test]
fn fuzz_instruction_hf_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let spec = InstructionSpec {
        tokenizer: TokenizerKind::HuggingFace,
        file: "tokenizer.json".into(),
        max_tokens: 8,
        pad_id: 0,
        unk_id: 1,
    };
    std::fs::write(dir.path().join("tokenizer.json"), HF_TOKENIZER).unwrap();
    // The unmutated file loads and encodes the way the vocabulary says.
    let t = Tokenizer::load(&spec, dir.path()).unwrap();
    let mut out = [9i64; 6];
    t.encode_into("Reach the RED banana", 0, &mut out).unwrap();
    assert_eq!(out, [2, 3, 4, 1, 0, 0]);
    let original: serde_yaml::Value = serde_yaml::from_str(HF_TOKENIZER).unwrap();
    run(
        "instruction_hf_tokenizer",
        64,
        (
            prop::collection::vec(tree_mut(HF_STRINGS), 0..4),
            prop_oneof![3 => Just(vec![]), 1 => byte_muts(4)],
            prop_oneof![3 => "\\PC{0,32}", 1 => instruction().prop_map(|s| s.chars().take(4096).collect())],
        ),
        |(tree, bytes, text)| {
            let mut value = original.clone();
            for m in &tree {
                apply_tree_mut(&mut value, m);
            }
            let Ok(json) = serde_json::to_vec(&value) else {
                return Ok(());
            };
            let mut json = json;
            for m in &bytes {
                apply_byte_mut(&mut json, m);
            }
            std::fs::write(dir.path().join("tokenizer.json"), &json).unwrap();
            let loaded = std::panic::catch_unwind(|| Tokenizer::load(&spec, dir.path()));
            let loaded = match loaded {
                Ok(loaded) => loaded,
                Err(payload) => {
                    let message = panic_message(&payload);
                    fixed_bug!(
                        "tokenizers-json-panic",
                        !(message.starts_with("Helper") || message.starts_with("Precompiled")),
                        "{message}"
                    );
                    return Err(TestCaseError::fail(format!(
                        "Tokenizer::load panicked: {message}"
                    )));
                }
            };
            if let Ok(t) = loaded {
                accepted();
                let mut out = vec![0i64; 8];
                let _ = t.encode_into(&text, 0, &mut out);
            }
            Ok(())
        },
    );
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// Bugs found by this file, as reproducers of the correct behaviour (docs/fuzzing.md, "Found"). All are
// fixed in src/ and run with every `cargo test`; a bug of a dependency is fixed by what src/ refuses or
// catches before or around it.

/// ImageView::new computes `width * channels` and `step * height` without overflow checks: a panic in a
/// debug build, and in a release build a wrapped product that accepts too little data (the first row is
/// then read out of bounds by Preprocessor::process). sensor_msgs/Image's uint32 fields cannot reach
/// this on a 64-bit target; the library API (usize) can.
#[test]
fn known_bug_image_view_size_overflow() {
    let cases: [(usize, usize, usize, &str); 3] = [
        // step x height overflows: debug panics ("attempt to multiply with overflow").
        (1, 4, usize::MAX, "rgb8"),
        // step x height = 2^64 wraps to 0: release accepts an empty buffer for a 1x2 image.
        (1, 2, 1 << 63, "rgb8"),
        // width x channels overflows.
        (usize::MAX / 2 + 1, 1, 8, "rgba8"),
    ];
    let mut wrong = Vec::new();
    for (w, h, step, enc) in cases {
        let refused = std::panic::catch_unwind(|| ImageView::new(w, h, step, enc, &[]).is_err());
        if !matches!(refused, Ok(true)) {
            let what = if refused.is_err() {
                "panicked"
            } else {
                "accepted"
            };
            wrong.push(format!(
                "ImageView::new({w}, {h}, {step}, {enc:?}, &[]) {what}"
            ));
        }
    }
    assert!(wrong.is_empty(), "must be an Err: {wrong:#?}");
}

/// A URDF (`robot_description`) nested a few thousand elements deep overflows the stack inside
/// roxmltree 0.20 and aborts the process (a 100 kB string; on an 8 MiB main thread the release build
/// aborts between 10 000 and 20 000 levels, a debug build on a 2 MiB test thread below 400). An abort
/// ends the whole test binary: run this one alone.
/// `urdf::joint_limits` on `text`, on a thread with the main thread's stack: refused (an abort of the
/// process fails the whole test binary).
fn urdf_refused_on_an_8_mib_stack(text: String) -> bool {
    let names = vec!["a".to_string()];
    let r = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || urdf::joint_limits(&text, &names).is_err())
        .unwrap()
        .join();
    matches!(r, Ok(true))
}

#[test]
fn known_bug_urdf_deep_nesting_overflows_stack() {
    let depth = 100_000;
    let text = format!("{}{}", "<robot>".repeat(depth), "</robot>".repeat(depth));
    assert!(urdf_refused_on_an_8_mib_stack(text));
}

/// A manifest of nested flow mappings (`{a: {a: ...`) is refused by serde_yaml's recursion limit, but only
/// after time quadratic in its length (unsafe-libyaml's scanner): 40 000 levels (160 kB) take about 5 s in
/// a release build, 100 000 levels (400 kB) about 35 s (debug: minutes). The same parser reads
/// `replay --param` values and a recording's parameters.
#[test]
fn known_slow_yaml_flow_nesting() {
    let dir = BundleDir::new();
    dir.write("{a: ".repeat(40_000).as_bytes());
    let start = Instant::now();
    assert!(Bundle::load(dir.path()).is_err());
    assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
}

/// Bundle::load accepts manifests whose derived values cannot work: sizes whose buffer lengths
/// overflow usize (Dims::frame_len and friends then panic in a debug build and wrap in a release
/// build; `as i64` turns sizes >= 2^63 into negative, i.e. "dynamic", expected shapes), an image
/// std/mean for which `(level - mean) / std` is not finite in f32, and an action.dt so small that
/// video_dt() is 0.
#[test]
fn known_bug_bundle_accepts_unusable_values() {
    let dir = BundleDir::new();
    let cases = [
        // 3 x height x width overflows usize.
        (
            "  - {name: exterior, height: 32, width: 32}\n  - {name: wrist, height: 32, width: 32}",
            "  - {name: exterior, height: 4294967296, width: 4294967296}\n  - {name: wrist, height: 4294967296, width: 4294967296}",
        ),
        ("latent_shape: [3, 8, 8]", "latent_shape: [4294967296, 4294967296, 1]"),
        // (1 - 0.5) / 1e-40 is +inf in f32; so is (0 - 3e38) / 0.5.
        ("  std: [0.5, 0.5, 0.5]", "  std: [1.0e-40, 0.5, 0.5]"),
        ("  mean: [0.5, 0.5, 0.5]", "  mean: [3.0e38, 0.5, 0.5]"),
        // 8 x 5e-324 / 2^40 frames rounds to 0 s between predicted frames.
        ("  frames: 2", "  frames: 1099511627776"),
    ];
    let mut accepted = Vec::new();
    for (from, to) in cases {
        assert!(dir.original.contains(from), "{from}");
        let mut text = dir.original.replacen(from, to, 1);
        if to.contains("1099511627776") {
            text = text.replacen("  dt: 0.1", "  dt: 5.0e-324", 1);
        }
        dir.write(text.as_bytes());
        if Bundle::load(dir.path()).is_ok() {
            accepted.push(to);
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
}

/// A tokenizer.json (instruction.tokenizer: tokenizer.json) with a malformed `decoder` value, or a
/// `Precompiled` normalizer without a valid charsmap, panics inside tokenizers 0.22.2
/// (src/decoders/mod.rs:90 `.expect("Helper")`, src/normalizers/mod.rs:143 `.expect("Precompiled")`)
/// instead of returning an error from wam_policy::tokenizer::Tokenizer::load.
#[test]
fn known_bug_tokenizer_json_panics() {
    let dir = tempfile::tempdir().unwrap();
    let spec = InstructionSpec {
        tokenizer: TokenizerKind::HuggingFace,
        file: "tokenizer.json".into(),
        max_tokens: 8,
        pad_id: 0,
        unk_id: 1,
    };
    let mut panicked = Vec::new();
    for (from, to) in [
        (r#""decoder":null"#, r#""decoder":{"type":"BPE","suffix":}"#),
        (
            r#""normalizer":{"type":"Lowercase"}"#,
            r#""normalizer":{"type":"Precompiled"}"#,
        ),
    ] {
        assert!(HF_TOKENIZER.contains(from));
        let json = HF_TOKENIZER.replacen(from, to, 1);
        std::fs::write(dir.path().join("tokenizer.json"), &json).unwrap();
        let r = std::panic::catch_unwind(|| Tokenizer::load(&spec, dir.path()).is_err());
        if !matches!(r, Ok(true)) {
            panicked.push(to);
        }
    }
    assert!(
        panicked.is_empty(),
        "Tokenizer::load panicked on: {panicked:#?}"
    );
}

/// A grayscale JPEG whose frame header says width 65 535 and whose component has a sampling factor
/// other than 1x1: zune-jpeg 0.5.15 (src/mcu.rs:134, `(self.info.width + 7) / 8` in u16) overflows,
/// a panic where overflow checks are on (debug builds: `cargo test`, a debug node). Reached from
/// wam_policy::preprocess::decode_compressed, i.e. from any CompressedImage message: 65 535 x 7 pixels
/// pass the default max_image_pixels.
#[test]
fn known_bug_jpeg_width_overflow() {
    let jpeg = known_bug_jpeg();
    let mut out = Vec::new();
    let r = std::panic::catch_unwind(move || decode(&jpeg, &mut out, 16_777_216).map(|_| ()));
    assert!(r.is_ok(), "decode_compressed panicked");
}

/// The reproducer of `known_bug_jpeg_width_overflow`: a 7x7 grayscale baseline JPEG from the image
/// crate, its SOF0 width set to 0xFFFF and its component's sampling factors from 0x11 to 0x12.
fn known_bug_jpeg() -> Vec<u8> {
    let img =
        image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(7, 7, image::Luma([128])));
    let mut jpeg = encode(&img, image::ImageFormat::Jpeg);
    let sof = jpeg
        .windows(2)
        .position(|w| w == [0xff, 0xc0])
        .expect("a baseline JPEG");
    jpeg[sof + 7..sof + 9].copy_from_slice(&[0xff, 0xff]);
    // SOF0: FF C0, length (2), precision, height (2), width (2), components, then id, sampling, table.
    assert_eq!(jpeg[sof + 9], 1, "one component");
    jpeg[sof + 11] = 0x12;
    jpeg
}

/// The nesting pre-check in front of roxmltree must count `<a x="/>">` as an open element: an
/// attribute value may hold `/>`, and a pre-check that takes the first `>` for the tag's end reads it as
/// self-closing, lets 100 000 levels through and the parser overflows the stack. Run alone (an abort
/// ends the test binary).
#[test]
fn known_bug_urdf_nesting_check_bypass() {
    let depth = 100_000;
    let text = format!("{}{}", "<a x=\"/>\">".repeat(depth), "</a>".repeat(depth));
    assert!(urdf_refused_on_an_8_mib_stack(text));
}

/// Size checks must not overflow themselves: three u64::MAX latent sizes multiply past u128.
#[test]
fn known_bug_bundle_size_check_overflow() {
    let dir = BundleDir::new();
    let max = u64::MAX;
    let mut panicked = Vec::new();
    for (from, to) in [
        (
            "latent_shape: [3, 8, 8]",
            format!("latent_shape: [{max}, {max}, {max}]"),
        ),
        (
            "context_frames: 2",
            format!("context_frames: {max}\n# and huge cameras below"),
        ),
    ] {
        let mut text = dir.original.replacen(from, &to, 1);
        if from.starts_with("context") {
            text = text.replace(
                "height: 32, width: 32",
                &format!("height: {max}, width: {max}"),
            );
        }
        dir.write(text.as_bytes());
        let path = dir.path();
        if !matches!(
            std::panic::catch_unwind(move || Bundle::load(path).is_err()),
            Ok(true)
        ) {
            panicked.push(to);
        }
    }
    assert!(panicked.is_empty(), "{panicked:#?}");
}
