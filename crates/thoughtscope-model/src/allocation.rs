//! Fallible allocation of large buffers: memory that cannot be had (a full machine, a low
//! `ulimit -v`) is an error line naming the buffer and its bytes, not an abort. A leaf module, so
//! the readers in `io` use it without depending on the weights.

use crate::{Error, Result};

/// Buffers smaller than this are allocated as usual: they are not what runs out, and the check
/// of [`check_allocatable`] would cost more than they do.
pub const LARGE_BUFFER: u64 = 64 << 20;

fn out_of_memory(what: &str, bytes: u64) -> Error {
    Error::OutOfMemory { what: what.to_owned(), bytes }
}

/// An empty vector with room for `capacity` values, allocated fallibly: when the memory cannot be
/// had (the machine is out of it, or `ulimit -v` is lower), an [`Error::OutOfMemory`] naming
/// `what` and the bytes, where `Vec::with_capacity` would abort the process with no error line.
pub fn try_with_capacity<T>(capacity: usize, what: &str) -> Result<Vec<T>> {
    let bytes = (capacity as u64).saturating_mul(std::mem::size_of::<T>() as u64);
    let mut values = Vec::new();
    values.try_reserve_exact(capacity).map_err(|_| out_of_memory(what, bytes))?;
    Ok(values)
}

/// `len` copies of `value`, allocated fallibly ([`try_with_capacity`]).
pub fn try_vec<T: Clone>(len: usize, value: T, what: &str) -> Result<Vec<T>> {
    let mut values = try_with_capacity(len, what)?;
    values.resize(len, value);
    Ok(values)
}

/// Whether `bytes` can be allocated now, for a buffer another library allocates (candle's
/// tensors: logits, key/value caches), which cannot be allocated fallibly: the memory is
/// reserved and given back at once (no page is touched), and failure is an
/// [`Error::OutOfMemory`] naming `what`. Buffers below [`LARGE_BUFFER`] pass unchecked.
pub fn check_allocatable(bytes: u64, what: &str) -> Result<()> {
    if bytes < LARGE_BUFFER {
        return Ok(());
    }
    let len = usize::try_from(bytes).map_err(|_| out_of_memory(what, bytes))?;
    drop(try_with_capacity::<u8>(len, what)?);
    Ok(())
}

#[cfg(test)]
mod allocation_tests {
    use super::*;

    #[test]
    fn an_allocation_that_cannot_be_had_is_an_error_naming_it_and_the_bytes() {
        // More than any address space: refused by the allocator, not the kernel's OOM killer.
        let err = try_vec(usize::MAX / 8, 0f32, "the test buffer").unwrap_err();
        assert!(err.is_environmental());
        let text = err.to_string();
        assert!(text.contains("out of memory") && text.contains("the test buffer") && text.contains(&(usize::MAX / 8 * 4).to_string()), "{text}");
        let err = check_allocatable(1 << 62, "logits of the test").unwrap_err().to_string();
        assert!(err.contains("logits of the test") && err.contains(&(1u64 << 62).to_string()), "{err}");
        assert_eq!(try_vec(3, 1.5f64, "small").unwrap(), [1.5; 3]);
        check_allocatable(LARGE_BUFFER, "64 MiB").unwrap();
    }
}
