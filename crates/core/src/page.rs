//! Where a page of a partition read ends.
//!
//! A page holds at most `limit` cells and, past its first cell, at most `max_bytes` of them:
//! the node never holds more for one answer, whatever sizes the stored cells have (cells
//! written by go-mezzanine, or before a bound was lowered, can be large).
//!
//! A reader that pages by `created_at` asks for the cells created *after* the last one it got.
//! Cells written in one transaction share their `created_at`, so a page that ended inside such
//! a group would make the reader skip the rest of the group for good. A page cut by `limit` or
//! by bytes therefore ends at a group boundary: the trailing partial group is left for the
//! next page, unless it is the whole page (then, cut by bytes, the group is completed up to
//! `limit`; cut by `limit`, nothing more can be done: the reader must ask with a higher
//! limit). A reader paging by `added_id` has no groups: any cut is safe.
//!
//! A page may so hold fewer than `limit` cells while more follow: the end of a shard is an
//! empty page, as DESIGN.md's change-stream readers assume.

/// A page being filled, in read order. `G` is what groups cells (their `created_at`), or
/// `()`-like when the reader pages by `added_id` (pass `None` as the group then).
#[derive(Debug)]
pub struct Page<T, G> {
    items: Vec<(T, Option<G>)>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
    /// A group larger than `max_bytes` on its own, being completed (up to `limit`).
    completing: Option<G>,
    full: bool,
}

impl<T, G: PartialEq + Clone> Page<T, G> {
    /// An empty page of at most `limit` items (at least 1) and `max_bytes` past the first.
    pub fn new(limit: usize, max_bytes: usize) -> Self {
        Page {
            items: Vec::new(),
            bytes: 0,
            limit: limit.max(1),
            max_bytes,
            completing: None,
            full: false,
        }
    }

    /// Offers the next item in read order, of `size` bytes, in `group` (`None`: no groups).
    /// Returns whether the page wants more; once it does not, further offers are ignored.
    /// The statement that feeds it should select `limit + 1` rows, so that the page can see
    /// whether a group goes on past the limit.
    pub fn offer(&mut self, item: T, size: usize, group: Option<G>) -> bool {
        if self.full {
            return false;
        }
        let counted_out = self.items.len() >= self.limit;
        let fits = self.items.is_empty()
            || self.bytes.saturating_add(size) <= self.max_bytes
            || (group.is_some() && self.completing == group);
        if !counted_out && fits {
            self.push(item, size, group);
            return true;
        }
        // The page ends here. A group this item continues is left to the next page, unless
        // it is the whole page: then, cut by bytes, it is completed up to the limit.
        let continues = group.is_some() && self.items.last().map(|(_, g)| g) == Some(&group);
        if continues {
            match self.items.iter().rposition(|(_, g)| *g != group) {
                Some(i) => self.items.truncate(i + 1),
                None if !counted_out => {
                    self.completing = group.clone();
                    self.push(item, size, group);
                    return true;
                }
                None => {}
            }
        }
        self.full = true;
        false
    }

    /// The items of the page, in read order.
    pub fn into_items(self) -> Vec<T> {
        self.items.into_iter().map(|(t, _)| t).collect()
    }

    fn push(&mut self, item: T, size: usize, group: Option<G>) {
        self.items.push((item, group));
        self.bytes = self.bytes.saturating_add(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Fills a page from `(size, group)` items numbered in order; returns the numbers kept.
    fn fill(limit: usize, max_bytes: usize, items: &[(usize, Option<u8>)]) -> Vec<usize> {
        let mut page = Page::new(limit, max_bytes);
        for (i, (size, g)) in items.iter().enumerate() {
            if !page.offer(i, *size, *g) {
                break;
            }
        }
        page.into_items()
    }

    #[test]
    fn by_added_id_a_page_ends_at_its_bytes_or_its_limit() {
        let small = [(10, None); 10];
        assert_eq!(fill(4, 1000, &small), [0, 1, 2, 3]);
        assert_eq!(fill(100, 35, &small), [0, 1, 2]);
        // The first cell is always given, however large.
        assert_eq!(fill(100, 5, &small), [0]);
    }

    #[test]
    fn by_created_at_a_group_is_never_split_when_it_can_be_left_whole() {
        let g = |x| Some(x);
        let items = [(10, g(1)), (10, g(2)), (10, g(2)), (10, g(2)), (10, g(3))];
        // Cut by limit inside group 2: group 2 goes to the next page.
        assert_eq!(fill(3, 1000, &items), [0]);
        // Cut by bytes inside group 2: likewise.
        assert_eq!(fill(100, 25, &items), [0]);
        // A cut at a boundary keeps everything before it.
        assert_eq!(fill(4, 1000, &items), [0, 1, 2, 3]);
    }

    #[test]
    fn a_group_that_is_the_whole_page_is_completed_by_bytes_not_past_the_limit() {
        let items = [(10, Some(1)), (10, Some(1)), (10, Some(1)), (10, Some(2))];
        assert_eq!(fill(100, 15, &items), [0, 1, 2]);
        assert_eq!(fill(2, 1000, &items), [0, 1]);
    }

    proptest! {
        /// Whatever the sizes and groups: the page is a prefix of the input, within its
        /// limit, within its bytes unless its first cell or one group exceeds them alone,
        /// and (grouped) ends at a group boundary unless one group fills it.
        #[test]
        fn pages_are_bounded_prefixes_ending_at_boundaries(
            limit in 1usize..20,
            max_bytes in 0usize..200,
            items in prop::collection::vec((0usize..60, 0u8..5), 0..40),
            grouped in any::<bool>(),
        ) {
            let mut sorted = items.clone();
            sorted.sort_by_key(|(_, g)| *g);
            let input: Vec<(usize, Option<u8>)> =
                sorted.iter().map(|(s, g)| (*s, grouped.then_some(*g))).collect();
            let kept = fill(limit, max_bytes, &input);
            prop_assert_eq!(&kept, &(0..kept.len()).collect::<Vec<_>>());
            prop_assert!(kept.len() <= limit);
            prop_assert!(input.is_empty() || !kept.is_empty());
            let bytes: usize = kept.iter().map(|&i| input[i].0).sum();
            let one_group = kept.iter().all(|&i| input[i].1 == input[0].1);
            prop_assert!(bytes <= max_bytes || kept.len() == 1 || (grouped && one_group));
            if grouped && kept.len() < input.len() && !one_group {
                let last = input[kept.len() - 1].1;
                prop_assert_ne!(input[kept.len()].1, last, "a group was split");
            }
        }
    }
}
