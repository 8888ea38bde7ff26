//! State carried across chunks (format 2, `stages.context.state`): the past tensors the context stage
//! reads, the present tensors it returns, the valid length and the chunk position. Plain buffers, no ONNX:
//! the runtime feeds `past` and `length`/`position`, copies the context's present outputs into `present`,
//! and calls [`CarriedState::commit`] once the chunk is accepted. Everything is allocated at start-up; a
//! commit swaps buffers and a slide moves values in place.

use crate::bundle::ResolvedState;

/// One carried tensor, stored in f32 (an f16 model's values are converted at the stage boundary).
pub struct StateBuffer {
    pub input: String,
    pub output: String,
    pub shape: Vec<i64>,
    /// What the next context run reads: M positions along the axis, the first `length` valid.
    pub past: Vec<f32>,
    /// What the last context run returned (committed into `past` when its chunk is accepted).
    pub present: Vec<f32>,
    /// Elements before the axis, and per position after it.
    outer: usize,
    inner: usize,
}

pub struct CarriedState {
    pub tensors: Vec<StateBuffer>,
    max_len: usize,
    block: usize,
    /// Valid positions in `past` (i64: fed as the `length` input).
    length: i64,
    /// Chunks since the last clear (fed as the `position` input).
    position: i64,
}

impl CarriedState {
    /// Zeroed buffers for a checked state description.
    pub fn new(resolved: &ResolvedState) -> Self {
        let tensors = resolved
            .tensors
            .iter()
            .map(|t| {
                let dims: Vec<usize> = t.shape.iter().map(|d| (*d).max(0) as usize).collect();
                let len = dims.iter().product();
                StateBuffer {
                    input: t.input.clone(),
                    output: t.output.clone(),
                    shape: t.shape.clone(),
                    past: vec![0.0; len],
                    present: vec![0.0; len],
                    outer: dims[..resolved.axis].iter().product(),
                    inner: dims[resolved.axis + 1..].iter().product(),
                }
            })
            .collect();
        CarriedState {
            tensors,
            max_len: resolved.max_len,
            block: resolved.block,
            length: 0,
            position: 0,
        }
    }

    pub fn length(&self) -> i64 {
        self.length
    }

    pub fn position(&self) -> i64 {
        self.position
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// Back to the start: zeros, length 0, position 0.
    pub fn clear(&mut self) {
        for t in &mut self.tensors {
            t.past.fill(0.0);
            t.present.fill(0.0);
        }
        self.length = 0;
        self.position = 0;
    }

    /// The chunk was accepted: its present tensors become the past, `length += B`, `position += 1`,
    /// and when the next block would not fit (`length + B > M`) the oldest B positions are dropped.
    pub fn commit(&mut self) {
        for t in &mut self.tensors {
            std::mem::swap(&mut t.past, &mut t.present);
        }
        self.length += self.block as i64;
        self.position += 1;
        if self.length + self.block as i64 > self.max_len as i64 {
            self.slide();
        }
    }

    /// Drops the oldest B positions of every tensor: shifts along the axis by B, zeros the tail.
    fn slide(&mut self) {
        let (m, b) = (self.max_len, self.block);
        for t in &mut self.tensors {
            let span = m * t.inner;
            let (drop, keep) = (b * t.inner, (m - b) * t.inner);
            for o in 0..t.outer {
                let row = &mut t.past[o * span..(o + 1) * span];
                row.copy_within(drop.., 0);
                row[keep..].fill(0.0);
            }
        }
        self.length = (self.length - b as i64).max(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{ElemType, StateTensorInfo};

    /// One tensor [2, M = 4, 2] (axis 1), block 2.
    fn state() -> CarriedState {
        CarriedState::new(&ResolvedState {
            tensors: vec![StateTensorInfo {
                input: "past".into(),
                output: "present".into(),
                elem: ElemType::F32,
                shape: vec![2, 4, 2],
            }],
            axis: 1,
            max_len: 4,
            block: 2,
            length: "len".into(),
            position: Some("pos".into()),
        })
    }

    /// What a context would return: past with the block written at [length, length + B): value
    /// 100 * chunk + 10 * outer + position-in-block.
    fn fake_context(s: &mut CarriedState, chunk: usize) {
        let len = s.length() as usize;
        let t = &mut s.tensors[0];
        t.present.copy_from_slice(&t.past);
        for o in 0..2 {
            for j in 0..2 {
                for i in 0..2 {
                    t.present[(o * 4 + len + j) * 2 + i] = (100 * chunk + 10 * o + j) as f32;
                }
            }
        }
    }

    #[test]
    fn commit_appends_and_slides_dropping_the_oldest_block() {
        let mut s = state();
        assert_eq!((s.length(), s.position()), (0, 0));
        fake_context(&mut s, 1);
        s.commit();
        assert_eq!((s.length(), s.position()), (2, 1));
        fake_context(&mut s, 2);
        s.commit();
        // Full (4 of 4): the next block would not fit, so the oldest block is dropped now.
        assert_eq!((s.length(), s.position()), (2, 2));
        let row0: Vec<f32> = s.tensors[0].past[..8].to_vec();
        assert_eq!(row0, [200.0, 200.0, 201.0, 201.0, 0.0, 0.0, 0.0, 0.0]);
        let row1: Vec<f32> = s.tensors[0].past[8..].to_vec();
        assert_eq!(row1, [210.0, 210.0, 211.0, 211.0, 0.0, 0.0, 0.0, 0.0]);
        fake_context(&mut s, 3);
        s.commit();
        assert_eq!((s.length(), s.position()), (2, 3));
        assert_eq!(
            &s.tensors[0].past[..8],
            &[300.0, 300.0, 301.0, 301.0, 0.0, 0.0, 0.0, 0.0]
        );
        // A present that was never committed is not the past.
        fake_context(&mut s, 4);
        assert_eq!(s.tensors[0].past[0], 300.0);
        s.clear();
        assert_eq!((s.length(), s.position()), (0, 0));
        assert!(s.tensors[0].past.iter().all(|x| *x == 0.0));
    }

    #[test]
    fn block_equal_to_the_maximum_keeps_one_chunk() {
        let mut s = CarriedState::new(&ResolvedState {
            tensors: vec![StateTensorInfo {
                input: "p".into(),
                output: "q".into(),
                elem: ElemType::F32,
                shape: vec![3],
            }],
            axis: 0,
            max_len: 3,
            block: 3,
            length: "len".into(),
            position: None,
        });
        s.tensors[0].present.copy_from_slice(&[1.0, 2.0, 3.0]);
        s.commit();
        // The block fills M, so the past slides out at once: the next chunk starts empty.
        assert_eq!(s.length(), 0);
        assert_eq!(s.position(), 1);
        assert_eq!(s.tensors[0].past, [0.0, 0.0, 0.0]);
    }
}
