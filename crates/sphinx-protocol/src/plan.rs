//! Public geometry of the parameterized layers, shared by both roles.
//!
//! A linear layer and a convolution are both
//! `z[o, pos] = Σ_p W[o, p] · a[map(p, pos)] + b[o]`: for a fully connected layer there
//! is one position and `map(p, 0) = p`; for a convolution `map` is the im2col gather (`None` where the window covers padding). With
//! batch-axis packing (slot `j` holds sample `j`), every index of `a` and `z` is one
//! ciphertext, so the whole layer is scalar × ciphertext multiply-adds with no rotations.

use ndarray::Array1;
use sphinx_nn::layers::{Layer, ParamLayer};

use crate::error::{ProtocolError, Result};

/// The gather structure of one parameterized layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    in_dim: usize,
    units: usize,
    patch: usize,
    positions: usize,
    /// `map[p · positions + pos]`: the input index, or `u32::MAX` for padding.
    map: Vec<u32>,
    /// For each input index, the `(p, pos)` pairs that read it.
    readers: Vec<Vec<(u32, u32)>>,
}

const PAD: u32 = u32::MAX;

impl LayerPlan {
    /// The plan of a parameterized layer.
    ///
    /// # Errors
    /// [`ProtocolError::UnsupportedModel`] for a non-parameterized layer or one too large to
    /// index with `u32`.
    pub fn of(layer: &Layer) -> Result<Self> {
        let unsupported = |what: &str| ProtocolError::UnsupportedModel(what.to_owned());
        let (in_dim, units, patch, positions, map) = match layer {
            Layer::Linear(l) => {
                let map = (0..l.in_dim())
                    .map(|i| u32::try_from(i).map_err(|_| unsupported("layer too wide")))
                    .collect::<Result<Vec<_>>>()?;
                (l.in_dim(), l.out_dim(), l.in_dim(), 1, map)
            }
            Layer::Conv2d(c) => {
                if c.in_dim() >= (1 << 24) {
                    return Err(unsupported("convolution input too large"));
                }
                // Gather indices by running im2col on the indices themselves (+1, so that
                // padding reads 0); below 2^24 they are exact in f32.
                let ids = Array1::from_iter((0..c.in_dim()).map(|i| (i + 1) as f32));
                let cols = c.im2col(ids.view())?;
                let map = cols
                    .iter()
                    .map(|&v| if v == 0.0 { PAD } else { v as u32 - 1 })
                    .collect();
                (
                    c.in_dim(),
                    c.out_channels(),
                    cols.nrows(),
                    cols.ncols(),
                    map,
                )
            }
            _ => return Err(unsupported("not a parameterized layer")),
        };
        let mut readers = vec![Vec::new(); in_dim];
        for p in 0..patch {
            for pos in 0..positions {
                let q = map[p * positions + pos];
                if q != PAD {
                    readers[q as usize].push((p as u32, pos as u32));
                }
            }
        }
        Ok(Self {
            in_dim,
            units,
            patch,
            positions,
            map,
            readers,
        })
    }

    /// Scalars per input sample (ciphertexts of `[a]`).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Output units: rows of `W`, entries of `b`.
    pub fn units(&self) -> usize {
        self.units
    }

    /// Columns of `W`.
    pub fn patch(&self) -> usize {
        self.patch
    }

    /// Output positions per unit (1 for a fully connected layer).
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Scalars per output sample (ciphertexts of `[z]`): `units · positions`.
    pub fn out_dim(&self) -> usize {
        self.units * self.positions
    }

    /// Entries of `W`.
    pub fn weights(&self) -> usize {
        self.units * self.patch
    }

    /// The input index that `W[·, p]` meets at output position `pos` (`None`: padding).
    pub fn input_at(&self, p: usize, pos: usize) -> Option<usize> {
        match self.map.get(p * self.positions + pos) {
            Some(&q) if q != PAD => Some(q as usize),
            _ => None,
        }
    }

    /// The `(p, pos)` pairs that read input index `q`.
    pub fn readers(&self, q: usize) -> &[(u32, u32)] {
        self.readers.get(q).map_or(&[], Vec::as_slice)
    }

    /// The input indices grouped by the output positions that read them: each group is
    /// `(positions, members)` with `members` the `(q, p per position)` read at exactly those
    /// positions (a window covers an input at most once). `Wᵀδ` of a group's members is then
    /// one matrix of weights times the same `δ[·, positions]` (all channels of a convolution
    /// input pixel share their positions; every input of a fully connected layer shares
    /// position 0).
    pub fn reader_groups(&self) -> Vec<ReaderGroup> {
        let mut groups: std::collections::BTreeMap<Vec<u32>, Vec<(usize, Vec<u32>)>> =
            std::collections::BTreeMap::new();
        for (q, readers) in self.readers.iter().enumerate() {
            let mut r = readers.clone();
            r.sort_unstable_by_key(|&(_, pos)| pos);
            let (ps, positions): (Vec<u32>, Vec<u32>) = r.into_iter().unzip();
            groups.entry(positions).or_default().push((q, ps));
        }
        groups
            .into_iter()
            .map(|(positions, members)| ReaderGroup { positions, members })
            .collect()
    }
}

/// Input indices of a layer read at the same output positions (see
/// [`LayerPlan::reader_groups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderGroup {
    /// The output positions, ascending.
    pub positions: Vec<u32>,
    /// `(q, p)` per member: `p[i]` is the column of `W` that meets `q` at `positions[i]`.
    pub members: Vec<(usize, Vec<u32>)>,
}
