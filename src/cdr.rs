//! Camera messages read in place from their serialized (CDR) bytes, as the middleware delivers them.
//!
//! A typed subscription costs two copies of every frame before the node sees it (the middleware
//! deserializes into a C message, r2r converts that into a Rust one) and an allocation per frame. A
//! serialized subscription delivers the bytes once; this module finds the fields in them without
//! copying, so a 0.9 MB frame is read where it lies. The same bytes are what a recording stores.
//!
//! Layout (XCDR1 and XCDR2 alike for these final types): a 4-byte encapsulation header (0x00 0x00/0x06:
//! big endian, 0x00 0x01/0x07: little endian), then the fields, each aligned to its size relative to the
//! end of that header; strings are a u32 length counting a trailing NUL, then the bytes; byte
//! sequences are a u32 length, then the bytes. Every read is bounds-checked: outside bytes are hostile.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrError {
    #[error(
        "serialized message is truncated (needs {needed} bytes at offset {offset}, has {len})"
    )]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("unknown CDR encapsulation {0:#06x}")]
    Encapsulation(u16),
    #[error("string field is not NUL-terminated UTF-8")]
    BadString,
}

impl CdrError {
    pub fn kind(&self) -> &'static str {
        match self {
            CdrError::Truncated { .. } => "message_truncated",
            CdrError::Encapsulation(_) => "message_encapsulation",
            CdrError::BadString => "message_bad_string",
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    /// Offset into `bytes`; alignment is relative to `origin` (the end of the encapsulation header).
    pos: usize,
    origin: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, CdrError> {
        let head = bytes.get(0..4).ok_or(CdrError::Truncated {
            offset: 0,
            needed: 4,
            len: bytes.len(),
        })?;
        let id = u16::from_be_bytes([head[0], head[1]]);
        let little = match id {
            0x0000 | 0x0006 => false,
            0x0001 | 0x0007 => true,
            other => return Err(CdrError::Encapsulation(other)),
        };
        Ok(Reader {
            bytes,
            pos: 4,
            origin: 4,
            little,
        })
    }

    fn take(&mut self, n: usize, align: usize) -> Result<&'a [u8], CdrError> {
        let rel = self.pos - self.origin;
        let start = self.pos + (align - rel % align) % align;
        let end = start.checked_add(n).ok_or(CdrError::Truncated {
            offset: start,
            needed: n,
            len: self.bytes.len(),
        })?;
        let s = self.bytes.get(start..end).ok_or(CdrError::Truncated {
            offset: start,
            needed: n,
            len: self.bytes.len(),
        })?;
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, CdrError> {
        let b = self.take(4, 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    fn i32(&mut self) -> Result<i32, CdrError> {
        Ok(self.u32()? as i32)
    }

    fn u8(&mut self) -> Result<u8, CdrError> {
        Ok(self.take(1, 1)?[0])
    }

    fn string(&mut self) -> Result<&'a str, CdrError> {
        let n = self.u32()? as usize;
        if n == 0 {
            return Ok("");
        }
        let s = self.take(n, 1)?;
        let (text, nul) = s.split_at(n - 1);
        if nul != [0] {
            return Err(CdrError::BadString);
        }
        std::str::from_utf8(text).map_err(|_| CdrError::BadString)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CdrError> {
        let n = self.u32()? as usize;
        self.take(n, 1)
    }

    /// std_msgs/Header: the stamp in seconds (frame_id is read past).
    fn header(&mut self) -> Result<f64, CdrError> {
        let sec = self.i32()?;
        let nanosec = self.u32()?;
        self.string()?;
        Ok(f64::from(sec) + f64::from(nanosec) * 1e-9)
    }
}

/// A sensor_msgs/Image, borrowed from its serialized bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageCdr<'a> {
    pub stamp: f64,
    pub height: u32,
    pub width: u32,
    pub encoding: &'a str,
    pub is_bigendian: u8,
    pub step: u32,
    pub data: &'a [u8],
}

impl<'a> ImageCdr<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CdrError> {
        let mut r = Reader::new(bytes)?;
        let stamp = r.header()?;
        let height = r.u32()?;
        let width = r.u32()?;
        let encoding = r.string()?;
        let is_bigendian = r.u8()?;
        let step = r.u32()?;
        let data = r.bytes()?;
        Ok(ImageCdr {
            stamp,
            height,
            width,
            encoding,
            is_bigendian,
            step,
            data,
        })
    }
}

/// A sensor_msgs/CompressedImage, borrowed from its serialized bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompressedImageCdr<'a> {
    pub stamp: f64,
    pub format: &'a str,
    pub data: &'a [u8],
}

impl<'a> CompressedImageCdr<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, CdrError> {
        let mut r = Reader::new(bytes)?;
        let stamp = r.header()?;
        let format = r.string()?;
        let data = r.bytes()?;
        Ok(CompressedImageCdr {
            stamp,
            format,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian XCDR1 Image the way rmw_fastrtps writes it.
    pub fn image_bytes(frame_id: &str, encoding: &str, w: u32, h: u32, data: &[u8]) -> Vec<u8> {
        let mut b = vec![0x00, 0x01, 0x00, 0x00];
        let pad = |b: &mut Vec<u8>, a: usize| {
            while !(b.len() - 4).is_multiple_of(a) {
                b.push(0);
            }
        };
        let string = |b: &mut Vec<u8>, s: &str| {
            pad(b, 4);
            b.extend_from_slice(&(s.len() as u32 + 1).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
            b.push(0);
        };
        b.extend_from_slice(&12i32.to_le_bytes());
        b.extend_from_slice(&500_000_000u32.to_le_bytes());
        string(&mut b, frame_id);
        pad(&mut b, 4);
        b.extend_from_slice(&h.to_le_bytes());
        b.extend_from_slice(&w.to_le_bytes());
        string(&mut b, encoding);
        b.push(0);
        pad(&mut b, 4);
        b.extend_from_slice(&(w * 3).to_le_bytes());
        b.extend_from_slice(&(data.len() as u32).to_le_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn an_image_is_read_in_place_with_its_alignment() {
        // A frame_id of 2 characters leaves the next field unaligned: the reader must pad.
        let data: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8).collect();
        let bytes = image_bytes("ab", "rgb8", 3, 2, &data);
        let img = ImageCdr::parse(&bytes).unwrap();
        assert_eq!(img.stamp, 12.5);
        assert_eq!((img.width, img.height, img.step), (3, 2, 9));
        assert_eq!(img.encoding, "rgb8");
        assert_eq!(img.data, &data[..]);
        assert_eq!(
            img.data.as_ptr(),
            bytes[bytes.len() - data.len()..].as_ptr()
        );
    }

    #[test]
    fn every_truncation_and_bad_header_is_an_error_not_a_panic() {
        let bytes = image_bytes("camera", "bgr8", 4, 4, &[7; 48]);
        for n in 0..bytes.len() {
            assert!(ImageCdr::parse(&bytes[..n]).is_err(), "{n}");
        }
        let mut bad = bytes.clone();
        bad[1] = 0x09;
        assert_eq!(
            ImageCdr::parse(&bad).unwrap_err(),
            CdrError::Encapsulation(0x0009)
        );
        // A data length claiming 4 GB.
        let mut huge = bytes.clone();
        let at = huge.len() - 48 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            ImageCdr::parse(&huge).unwrap_err().kind(),
            "message_truncated"
        );
    }
}
