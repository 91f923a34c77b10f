//! Gradients that follow the touched voxels, not the grid.
//!
//! A [`SparseRows`] holds the rows of an `[N, width]` gradient that were written, packed in
//! first-write order, with an `[N]` index from grid row to packed slot. Its storage is kept
//! between uses, so writing ([`SparseRows::row_mut`]), reading back ([`SparseRows::iter`]),
//! merging and clearing cost the rows touched, never `N`, and memory follows the rows touched
//! too. svox2 keeps the same set as a voxel mask (`sparse_grad_indexer`) and applies its
//! RMSProp step only to those rows.

use std::ops::AddAssign;

/// Slot of an untouched row.
const UNTOUCHED: u32 = u32::MAX;

/// A reusable sparse `[N, width]` gradient: the rows written since the last clear.
#[derive(Debug, Clone)]
pub(crate) struct SparseRows<T> {
    width: usize,
    /// `[N]`: each row's index into `rows` (and row of `values`), or [`UNTOUCHED`].
    slots: Vec<u32>,
    /// The rows written, in first-write order.
    rows: Vec<u32>,
    /// `[rows.len(), width]`: their values.
    values: Vec<T>,
}

impl<T: Copy + Default + AddAssign> SparseRows<T> {
    /// An empty (all-zero) gradient of `rows` rows of `width` values.
    pub fn new(rows: usize, width: usize) -> Self {
        Self {
            width,
            slots: vec![UNTOUCHED; rows],
            rows: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Whether this gradient has `rows` rows of `width` values.
    pub fn has_shape(&self, rows: usize, width: usize) -> bool {
        self.width == width && self.slots.len() == rows
    }

    /// Row `row` for writing (zeros on its first write since the last clear).
    #[inline]
    pub fn row_mut(&mut self, row: usize) -> &mut [T] {
        let mut slot = self.slots[row];
        if slot == UNTOUCHED {
            slot = self.rows.len() as u32;
            self.slots[row] = slot;
            self.rows.push(row as u32);
            self.values
                .resize(self.values.len() + self.width, T::default());
        }
        let start = slot as usize * self.width;
        &mut self.values[start..start + self.width]
    }

    /// The rows written since the last clear and their values, in first-write order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &[T])> + '_ {
        self.rows
            .iter()
            .map(|&r| r as usize)
            .zip(self.values.chunks_exact(self.width.max(1)))
    }

    /// Adds every written row of `other` (same shape) to this gradient.
    pub fn add_rows_of(&mut self, other: &Self) {
        for (row, src) in other.iter() {
            for (dst, &v) in self.row_mut(row).iter_mut().zip(src) {
                *dst += v;
            }
        }
    }

    /// Forgets the written rows (all zero again), keeping the storage: costs the rows written.
    pub fn clear(&mut self) {
        for &row in &self.rows {
            self.slots[row as usize] = UNTOUCHED;
        }
        self.rows.clear();
        self.values.clear();
    }

    /// The dense `[N · width]` values (unwritten rows are zero).
    pub fn into_dense(self) -> Vec<T> {
        let mut dense = vec![T::default(); self.slots.len() * self.width];
        for (row, values) in self.iter() {
            dense[row * self.width..(row + 1) * self.width].copy_from_slice(values);
        }
        dense
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clearing_forgets_what_was_written_and_merging_follows_rows() {
        let mut a = SparseRows::<f64>::new(5, 2);
        a.row_mut(3)[1] += 2.0;
        a.row_mut(1)[0] += 1.0;
        a.row_mut(3)[0] += 0.5;
        let rows = |g: &SparseRows<f64>| g.iter().map(|(r, _)| r).collect::<Vec<_>>();
        assert_eq!(rows(&a), [3, 1]);
        let mut b = SparseRows::<f64>::new(5, 2);
        b.row_mut(4)[0] += 7.0;
        b.add_rows_of(&a);
        b.add_rows_of(&a);
        assert_eq!(rows(&b), [4, 3, 1]);
        assert_eq!(
            b.clone().into_dense(),
            [0., 0., 2., 0., 0., 0., 1., 4., 7., 0.]
        );
        b.clear();
        assert!(rows(&b).is_empty());
        assert!(b.has_shape(5, 2) && !b.has_shape(5, 3));
        assert_eq!(b.row_mut(4), [0.0, 0.0]);
        assert_eq!(b.into_dense(), [0.0; 10]);
    }
}
