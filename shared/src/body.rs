//! Reading a request body whole: when it is complete, and when it is too large.
//!
//! A body ends with its last chunk (`end_of_stream`) or, when the request has trailers, in the
//! trailers callback, where no chunk arrives at all. A module that decided only on the last
//! chunk would let every request with trailers through unread; [`RequestBody`] decides in both
//! places, once, for every module ([`crate::plugin`] drives it).

/// What to do with a request body chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The body is not being read (never was, or already delivered): let it pass.
    Pass,
    /// More is coming: keep buffering.
    Wait,
    /// The body passed the limit; it is not read any further.
    TooLarge { limit: usize },
    /// The whole body, this many bytes, is buffered.
    Whole { size: usize },
}

/// One request's body reading.
#[derive(Debug, Default)]
pub struct RequestBody {
    buffered: usize,
    done: bool,
}

impl RequestBody {
    /// A body chunk arrived: `size` bytes are buffered in all. `limit` is the most this request
    /// reads whole, `None` when it does not read its body.
    pub fn on_chunk(&mut self, size: usize, end_of_stream: bool, limit: Option<usize>) -> Step {
        let Some(limit) = limit.filter(|_| !self.done) else { return Step::Pass };
        self.buffered = size;
        if size > limit {
            self.done = true;
            return Step::TooLarge { limit };
        }
        if !end_of_stream {
            return Step::Wait;
        }
        self.done = true;
        Step::Whole { size }
    }

    /// The request's trailers arrived: what is buffered is the whole body.
    pub fn on_trailers(&mut self, limit: Option<usize>) -> Step {
        self.on_chunk(self.buffered, true, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_whole_at_its_last_chunk_and_delivered_once() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_chunk(10, false, Some(100)), Step::Wait);
        assert_eq!(body.on_chunk(30, true, Some(100)), Step::Whole { size: 30 });
        // Envoy does not call again after the end, but a second delivery would read twice.
        assert_eq!(body.on_chunk(30, true, Some(100)), Step::Pass);
        assert_eq!(body.on_trailers(Some(100)), Step::Pass);
    }

    #[test]
    fn a_body_with_trailers_is_whole_in_the_trailers_callback() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_chunk(12, false, Some(100)), Step::Wait);
        assert_eq!(body.on_chunk(40, false, Some(100)), Step::Wait);
        assert_eq!(body.on_trailers(Some(100)), Step::Whole { size: 40 });
    }

    #[test]
    fn trailers_without_any_body_chunk_deliver_an_empty_body() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_trailers(Some(100)), Step::Whole { size: 0 });
    }

    #[test]
    fn a_body_over_the_limit_is_refused_once_and_then_passes() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_chunk(60, false, Some(100)), Step::Wait);
        assert_eq!(body.on_chunk(101, false, Some(100)), Step::TooLarge { limit: 100 });
        assert_eq!(body.on_chunk(150, true, Some(100)), Step::Pass);
        assert_eq!(body.on_trailers(Some(100)), Step::Pass);
    }

    #[test]
    fn a_body_exactly_at_the_limit_is_read() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_chunk(100, true, Some(100)), Step::Whole { size: 100 });
    }

    #[test]
    fn a_body_that_is_not_read_passes_in_every_callback() {
        let mut body = RequestBody::default();
        assert_eq!(body.on_chunk(5, false, None), Step::Pass);
        assert_eq!(body.on_chunk(500, true, None), Step::Pass);
        assert_eq!(body.on_trailers(None), Step::Pass);
    }
}
