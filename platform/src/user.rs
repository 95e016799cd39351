//! Typed access to the ioctl caller's memory. A [`spec::UserPtr`] is only an address; these
//! wrappers move whole values across with the kernel's `user_memcpy` and nothing else, so no
//! code above this module can touch user memory directly (SMAP) or fault on a bad address.

use core::mem::size_of;

use spec::UserPtr;
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::{KResult, Kernel, Status};

/// Reads a `T` from the caller.
pub fn read<T: FromBytes + IntoBytes, K: Kernel>(kernel: &K, ptr: UserPtr<T>) -> KResult<T> {
    if ptr.is_null() || !ptr.is_user_range(size_of::<T>() as u64) {
        return Err(Status::BAD_ADDRESS);
    }
    let mut v = T::new_zeroed();
    kernel.copy_from_user(v.as_mut_bytes(), ptr.addr())?;
    Ok(v)
}

/// Writes a whole `T` to the caller.
pub fn write<T: IntoBytes + Immutable, K: Kernel>(
    kernel: &K,
    ptr: UserPtr<T>,
    value: &T,
) -> KResult {
    if ptr.is_null() || !ptr.is_user_range(size_of::<T>() as u64) {
        return Err(Status::BAD_ADDRESS);
    }
    kernel.copy_to_user(ptr.addr(), value.as_bytes())
}

/// Writes back only the byte ranges `(name, offset, size)` of `value`: the fields a handler
/// owns. Every other byte of the caller's structure stays as the caller wrote it. Fields
/// that follow each other with no byte between them go in one `user_memcpy` (a
/// BUFFER_EXCHANGE's six fields are three runs), each run in the order given.
pub fn write_fields<T: IntoBytes + Immutable, K: Kernel>(
    kernel: &K,
    ptr: UserPtr<T>,
    value: &T,
    fields: &[(&str, usize, usize)],
) -> KResult {
    if ptr.is_null() || !ptr.is_user_range(size_of::<T>() as u64) {
        return Err(Status::BAD_ADDRESS);
    }
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < fields.len() {
        let (_, start, size) = fields[i];
        let mut end = start.checked_add(size).ok_or(Status::BAD_VALUE)?;
        i += 1;
        while let Some(&(_, next, size)) = fields.get(i).filter(|f| f.1 == end) {
            end = next.checked_add(size).ok_or(Status::BAD_VALUE)?;
            i += 1;
        }
        let src = bytes.get(start..end).ok_or(Status::BAD_VALUE)?;
        kernel.copy_to_user(ptr.addr() + start as u64, src)?;
    }
    Ok(())
}

/// Element `index` of a caller array starting at `base`.
pub fn element<T>(base: UserPtr<T>, index: usize) -> KResult<UserPtr<T>> {
    base.element(index as u64).ok_or(Status::BAD_ADDRESS)
}

/// Reads element `index` of a caller array.
pub fn read_at<T: FromBytes + IntoBytes, K: Kernel>(
    kernel: &K,
    base: UserPtr<T>,
    index: usize,
) -> KResult<T> {
    read(kernel, element(base, index)?)
}

/// Writes element `index` of a caller array.
pub fn write_at<T: IntoBytes + Immutable, K: Kernel>(
    kernel: &K,
    base: UserPtr<T>,
    index: usize,
    value: &T,
) -> KResult {
    write(kernel, element(base, index)?, value)
}
