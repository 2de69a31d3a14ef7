//! Lists read from an answer are trimmed to their length as soon as they are read.
//!
//! A `Vec` grown one element at a time has room for at least four; a machine's
//! one or two IP addresses would hold twice the memory they need. Trimming each
//! list right after it is read hands the spare room back while the rest of the
//! answer is still being read, so the next records reuse it.
//!
//! A list whose room takes [`LARGE`] bytes or more is left as it is, as serde
//! leaves every list. The C library (glibc) serves so large an allocation from a
//! mapping of its own and, when one is freed, raises the size from which it does
//! so to that allocation's. A trimmed list frees less than the next list of the
//! same length asks for while it grows, so each one was mapped afresh, handed
//! back to the system when dropped, and its pages faulted in again on every
//! call. Left as it is, it is served from the heap and reused from the second
//! call on. The price: a large list keeps up to as much spare room as it holds,
//! which is resident only where those pages were written before (heap memory
//! reused from earlier work), never in a fresh mapping.

/// The size, in bytes, from which a list's spare room is left in place: the
/// C library's default threshold for serving an allocation from its own mapping.
const LARGE: usize = 128 * 1024;

pub(crate) trait Fit {
    fn fit(self) -> Self;
}

impl<T> Fit for Vec<T> {
    fn fit(mut self) -> Self {
        if self.capacity().saturating_mul(std::mem::size_of::<T>()) < LARGE {
            self.shrink_to_fit();
        }
        self
    }
}

impl<T: Fit> Fit for Option<T> {
    fn fit(self) -> Self {
        self.map(Fit::fit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_lists_are_trimmed_and_large_ones_keep_their_room() {
        let mut small = Vec::<u64>::with_capacity(8);
        small.push(1);
        assert_eq!(small.fit().capacity(), 1);

        let mut large = Vec::<u64>::with_capacity(LARGE / 8 * 2);
        large.extend(0..(LARGE / 8) as u64);
        let room = large.capacity();
        assert!(room > large.len());
        assert_eq!(large.fit().capacity(), room);

        let mut some = Some(Vec::<u8>::with_capacity(16));
        some.as_mut().unwrap().push(1);
        assert_eq!(some.fit().unwrap().capacity(), 1);
    }
}
