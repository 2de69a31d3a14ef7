//! Lists read from an answer are trimmed to their length as soon as they are read.
//!
//! A `Vec` grown one element at a time has room for at least four; a machine's
//! one or two IP addresses would hold twice the memory they need. Trimming each
//! list right after it is read hands the spare room back while the rest of the
//! answer is still being read, so the next records reuse it.
//!
//! A list whose room takes [`LARGE`] bytes or more is left as it is. An
//! allocation that large is mapped from the system on its own pages, and the
//! spare room at its end was never written, so it holds no memory; trimming it
//! would only move the list to a fresh mapping, which is handed back to the
//! system when the list is dropped and faulted in page by page on every call.

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
