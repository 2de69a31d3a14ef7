//! Lists read from an answer are trimmed to their length as soon as they are read.
//!
//! A `Vec` grown one element at a time has room for at least four; a machine's
//! one or two IP addresses would hold twice the memory they need. Trimming each
//! list right after it is read hands the spare room back while the rest of the
//! answer is still being read, so the next records reuse it.

pub(crate) trait Fit {
    fn fit(self) -> Self;
}

impl<T> Fit for Vec<T> {
    fn fit(mut self) -> Self {
        self.shrink_to_fit();
        self
    }
}

impl<T: Fit> Fit for Option<T> {
    fn fit(self) -> Self {
        self.map(Fit::fit)
    }
}
