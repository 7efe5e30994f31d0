//! Input images for inference: 8-bit PNG (grey, grey+alpha, RGB, RGBA; palette images
//! are expanded) and binary or ASCII PGM, turned into one row of `[0, 1]` values.

use std::path::Path;

use crate::error::{ClientError, Result, io_at};

/// A greyscale image with values in `[0, 1]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width × height` values.
    pub pixels: Vec<f32>,
}

/// Largest side accepted (a guard against decompression bombs).
pub const MAX_SIDE: usize = 4096;

fn bad(path: &Path, reason: impl std::fmt::Display) -> ClientError {
    ClientError::Image(format!("{}: {reason}", path.display()))
}

/// Reads a PNG or PGM file (chosen by content, not by name).
///
/// # Errors
/// [`ClientError::Io`]; [`ClientError::Image`] for an unsupported or malformed file.
pub fn read(path: &Path) -> Result<GreyImage> {
    let bytes = std::fs::read(path).map_err(io_at(path))?;
    if bytes.starts_with(b"\x89PNG") {
        read_png(&bytes, path)
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        read_pgm(&bytes, path)
    } else {
        Err(bad(path, "not a PNG or PGM file"))
    }
}

fn read_png(bytes: &[u8], path: &Path) -> Result<GreyImage> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| bad(path, e))?;
    let (width, height) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(
            path,
            format!("{width}×{height} pixels is out of range"),
        ));
    }
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad(path, "image too large"))?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| bad(path, e))?;
    let channels = frame.color_type.samples();
    let data = buf
        .get(..frame.buffer_size())
        .ok_or_else(|| bad(path, "short frame"))?;
    let pixels = data
        .chunks_exact(channels)
        .take(width * height)
        .map(|px| match px {
            [g] | [g, _] => f32::from(*g) / 255.0,
            [r, g, b] | [r, g, b, _] => {
                (0.299 * f32::from(*r) + 0.587 * f32::from(*g) + 0.114 * f32::from(*b)) / 255.0
            }
            _ => 0.0,
        })
        .collect::<Vec<_>>();
    if pixels.len() != width * height {
        return Err(bad(path, "truncated pixel data"));
    }
    Ok(GreyImage {
        width,
        height,
        pixels,
    })
}

/// Netpbm header fields: whitespace-separated numbers, `#` comments to end of line.
fn pgm_header(bytes: &[u8], path: &Path) -> Result<([usize; 3], usize)> {
    let mut fields = [0usize; 3];
    let mut i = 2;
    for field in &mut fields {
        loop {
            match bytes.get(i) {
                Some(b'#') => {
                    while bytes.get(i).is_some_and(|&b| b != b'\n') {
                        i += 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => i += 1,
                Some(_) => break,
                None => return Err(bad(path, "truncated PGM header")),
            }
        }
        let start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        *field = std::str::from_utf8(bytes.get(start..i).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(path, "bad PGM header"))?;
    }
    // Exactly one whitespace byte separates the header from binary data.
    Ok((fields, i + 1))
}

fn read_pgm(bytes: &[u8], path: &Path) -> Result<GreyImage> {
    let ([width, height, maxval], offset) = pgm_header(bytes, path)?;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad(
            path,
            format!("{width}×{height} pixels is out of range"),
        ));
    }
    if maxval == 0 || maxval > 65535 {
        return Err(bad(path, format!("maximum value {maxval} is out of range")));
    }
    let n = width * height;
    let scale = maxval as f32;
    let pixels: Vec<f32> = if bytes.starts_with(b"P5") {
        let per = if maxval < 256 { 1 } else { 2 };
        let data = bytes
            .get(offset..offset + n * per)
            .ok_or_else(|| bad(path, "truncated PGM data"))?;
        data.chunks_exact(per)
            .map(|c| match c {
                [v] => f32::from(*v),
                [hi, lo] => f32::from(u16::from_be_bytes([*hi, *lo])),
                _ => 0.0,
            })
            .map(|v| (v / scale).min(1.0))
            .collect()
    } else {
        let text = std::str::from_utf8(bytes.get(offset.saturating_sub(1)..).unwrap_or_default())
            .map_err(|_| bad(path, "ASCII PGM with non-ASCII data"))?;
        let values: Vec<f32> = text
            .split_ascii_whitespace()
            .take(n)
            .map(|t| t.parse::<f32>().map(|v| (v / scale).min(1.0)))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad(path, "bad PGM value"))?;
        values
    };
    if pixels.len() != n {
        return Err(bad(path, "truncated PGM data"));
    }
    Ok(GreyImage {
        width,
        height,
        pixels,
    })
}

impl GreyImage {
    /// The image at `width × height` by area averaging (or nearest pixel when enlarging),
    /// for a model input of that size.
    #[must_use]
    pub fn resized(&self, width: usize, height: usize) -> Self {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            let y0 = y * self.height / height;
            let y1 = ((y + 1) * self.height / height).max(y0 + 1);
            for x in 0..width {
                let x0 = x * self.width / width;
                let x1 = ((x + 1) * self.width / width).max(x0 + 1);
                let mut sum = 0.0;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += self
                            .pixels
                            .get(yy * self.width + xx)
                            .copied()
                            .unwrap_or(0.0);
                    }
                }
                pixels.push(sum / ((y1 - y0) * (x1 - x0)) as f32);
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Writes the image as an 8-bit greyscale PNG.
    ///
    /// # Errors
    /// [`ClientError::Io`], [`ClientError::Image`].
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let bytes: Vec<u8> = self
            .pixels
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        write_png(
            path,
            self.width,
            self.height,
            png::ColorType::Grayscale,
            &bytes,
        )
    }
}

/// Writes 8-bit pixel data as a PNG.
///
/// # Errors
/// [`ClientError::Io`], [`ClientError::Image`].
pub fn write_png(
    path: &Path,
    width: usize,
    height: usize,
    color: png::ColorType,
    data: &[u8],
) -> Result<()> {
    let file = std::fs::File::create(path).map_err(io_at(path))?;
    let (w, h) = (
        u32::try_from(width).map_err(|_| bad(path, "too wide"))?,
        u32::try_from(height).map_err(|_| bad(path, "too tall"))?,
    );
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(color);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| bad(path, e))?;
    writer.write_image_data(data).map_err(|e| bad(path, e))?;
    writer.finish().map_err(|e| bad(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_pgm_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let img = GreyImage {
            width: 3,
            height: 2,
            pixels: vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.0],
        };
        let p = tmp.path().join("a.png");
        img.write_png(&p).unwrap();
        let back = read(&p).unwrap();
        assert_eq!((back.width, back.height), (3, 2));
        for (a, b) in back.pixels.iter().zip(&img.pixels) {
            assert!((a - b).abs() < 1.0 / 255.0);
        }
        let pgm = tmp.path().join("a.pgm");
        std::fs::write(&pgm, b"P5\n# c\n3 2\n255\n\x00\x80\xff\x40\xc0\x00").unwrap();
        let g = read(&pgm).unwrap();
        assert_eq!(g.pixels.len(), 6);
        assert!((g.pixels[2] - 1.0).abs() < 1e-6);
        let ascii = tmp.path().join("b.pgm");
        std::fs::write(&ascii, b"P2 3 2 4\n0 1 2\n3 4 0\n").unwrap();
        assert_eq!(read(&ascii).unwrap().pixels[4], 1.0);
        std::fs::write(&ascii, b"P5 3 2 255\n\x00").unwrap();
        assert!(read(&ascii).is_err());
        std::fs::write(&ascii, b"hello").unwrap();
        assert!(read(&ascii).is_err());
        assert_eq!(img.resized(6, 4).pixels.len(), 24);
        assert_eq!(img.resized(1, 1).pixels.len(), 1);
    }
}
