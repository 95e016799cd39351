//! Hand-written support types the generated modules use.

use core::fmt;
use core::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A pointer into the memory of the process that issued an ioctl, as it appears inside an
/// ioctl structure. It is only an address: nothing in this crate can dereference it, and the
/// driver reaches the memory only through the kernel's `user_memcpy`.
#[repr(transparent)]
#[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct UserPtr<T> {
    addr: u64,
    _to: PhantomData<T>,
}

impl<T> UserPtr<T> {
    pub const NULL: Self = UserPtr {
        addr: 0,
        _to: PhantomData,
    };

    pub const fn from_addr(addr: u64) -> Self {
        UserPtr {
            addr,
            _to: PhantomData,
        }
    }

    pub const fn addr(self) -> u64 {
        self.addr
    }

    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// Whether `[addr, addr + len)` lies in the user half of the x86_64 Haiku address space
    /// (`IS_USER_ADDRESS`); the kernel's `user_memcpy` makes the final check.
    pub const fn is_user_range(self, len: u64) -> bool {
        use crate::haiku_driver::{USER_BASE, USER_TOP};
        let end = match self.addr.checked_add(len) {
            Some(e) => e,
            None => return false,
        };
        self.addr >= USER_BASE && (len == 0 || end - 1 <= USER_TOP)
    }

    /// The address of element `index` of an array starting here, if it does not overflow.
    pub const fn element(self, index: u64) -> Option<Self> {
        match index.checked_mul(core::mem::size_of::<T>() as u64) {
            Some(off) => match self.addr.checked_add(off) {
                Some(a) => Some(UserPtr::from_addr(a)),
                None => None,
            },
            None => None,
        }
    }
}

impl<T> Clone for UserPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for UserPtr<T> {}

impl<T> PartialEq for UserPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl<T> Eq for UserPtr<T> {}

impl<T> Default for UserPtr<T> {
    fn default() -> Self {
        Self::NULL
    }
}

impl<T> fmt::Debug for UserPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserPtr({:#x})", self.addr)
    }
}

/// A raw value that is not one of a group's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownValue<T> {
    /// The constant group's C-facing name.
    pub group: &'static str,
    pub value: T,
}

impl<T: fmt::LowerHex> fmt::Display for UnknownValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} is not a known {}", self.value, self.group)
    }
}

/// One named constant of a flags or values group, with the facts the spec attaches to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constant<T: 'static> {
    pub name: &'static str,
    pub value: T,
    /// Sample rate in Hz, for rate constants.
    pub hz: Option<u32>,
    /// Significant bits of a sample, for format constants.
    pub width: Option<u32>,
    /// Bits a sample occupies in memory, for format constants.
    pub phys_width: Option<u32>,
    /// How a sample is encoded, for linear PCM format constants.
    pub encoding: Option<SampleEncoding>,
    /// A mask made of other values of the group (not a flag of its own).
    pub composite: bool,
}

/// How a linear PCM sample format encodes a sample: the spec's `encoding` fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleEncoding {
    /// Two's-complement integer.
    Signed,
    /// Offset-binary integer (silence is the middle value).
    Unsigned,
    /// IEEE 754 floating point.
    Float,
}
