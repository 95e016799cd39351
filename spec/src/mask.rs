//! Typed bit masks: a mask field of the wire (`pcm_info.formats`) as the set of a bit-number
//! group's values ([`BitSet`]). The generated flags-group sets (`SampleRateSet`, ...) have
//! the same methods.

use core::fmt;
use core::marker::PhantomData;

/// A group of bit *numbers* (`kind = "bit"` in the spec): each value names the bit
/// `1 << value` of a mask. Implemented by the generated enums.
pub trait BitNumber: Copy + Eq + fmt::Debug + 'static {
    /// The group's name in the spec.
    const GROUP: &'static str;
    /// Every value, in declaration order.
    const ALL: &'static [Self];
    /// The mask of this value (`1 << n`).
    fn mask(self) -> u64;
}

/// A mask of a bit-number group as the wire holds it. Every bit is kept, including bits no
/// value of the group names (a newer device may set them): [`BitSet::iter`] and
/// [`BitSet::contains`] see only the known values, [`BitSet::unknown_bits`] the rest.
pub struct BitSet<E> {
    bits: u64,
    _values: PhantomData<E>,
}

impl<E: BitNumber> BitSet<E> {
    /// The set with no bit.
    pub const EMPTY: Self = BitSet {
        bits: 0,
        _values: PhantomData,
    };

    /// The set of a raw mask, unknown bits kept.
    pub const fn from_bits(bits: u64) -> Self {
        BitSet {
            bits,
            _values: PhantomData,
        }
    }

    /// The raw mask, unknown bits included.
    pub const fn bits(self) -> u64 {
        self.bits
    }

    /// The bits of the mask that no value of the group names.
    pub fn unknown_bits(self) -> u64 {
        E::ALL.iter().fold(self.bits, |b, v| b & !v.mask())
    }

    /// Whether `v`'s bit is set.
    pub fn contains(self, v: E) -> bool {
        self.bits & v.mask() != 0
    }

    /// The set with `v`'s bit set as well.
    #[must_use]
    pub fn with(self, v: E) -> Self {
        Self::from_bits(self.bits | v.mask())
    }

    /// The bits set in both.
    #[must_use]
    pub const fn intersection(self, other: Self) -> Self {
        Self::from_bits(self.bits & other.bits)
    }

    /// Whether no bit (known or not) is set.
    pub const fn is_empty(self) -> bool {
        self.bits == 0
    }

    /// The known values whose bit is set, in the group's declaration order.
    pub fn iter(self) -> impl Iterator<Item = E> {
        E::ALL.iter().copied().filter(move |v| self.contains(*v))
    }
}

impl<E> Clone for BitSet<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for BitSet<E> {}

impl<E> PartialEq for BitSet<E> {
    fn eq(&self, other: &Self) -> bool {
        self.bits == other.bits
    }
}

impl<E> Eq for BitSet<E> {}

impl<E: BitNumber> Default for BitSet<E> {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl<E: BitNumber> From<E> for BitSet<E> {
    fn from(v: E) -> Self {
        Self::from_bits(v.mask())
    }
}

impl<E: BitNumber> FromIterator<E> for BitSet<E> {
    fn from_iter<I: IntoIterator<Item = E>>(iter: I) -> Self {
        iter.into_iter().fold(Self::EMPTY, Self::with)
    }
}

impl<E: BitNumber> fmt::Debug for BitSet<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_set();
        l.entries(self.iter());
        let unknown = self.unknown_bits();
        if unknown != 0 {
            l.entry(&format_args!("unknown {unknown:#x}"));
        }
        l.finish()
    }
}
